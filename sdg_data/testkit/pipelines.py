"""Tiny random-weight pipelines of the four generator classes, built offline (no hub), for tests and benchmarks.

Each uses the same pipeline, transformer, VAE, text-encoder and tokenizer classes as the real checkpoint, with a
few thousand weights, so ``sdg generate`` runs the real diffusers code path end to end on a CPU in well under a
second an image. Tokenizers are byte-level (one token a byte) and built from Python objects.

    python -m sdg_data.testkit.pipelines OUT_DIR      # writes OUT_DIR/{flux1,flux2,z-image,longcat,sana}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdg_data.io.vision_compat import image_only
from sdg_data.testkit.models import lm_config, vision_token_ids


_QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# A minimal Qwen-style chat template: enough for the pipelines that render one (LongCat's prompt rewriter).
_QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Mistral-style chat template for the FLUX.2 text processor (system + user turns, text only).
_MISTRAL_TEMPLATE = (
    "<s>{% for m in messages %}{% set text = m['content'] if m['content'] is string else "
    "(m['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('')) %}"
    "{% if m['role'] == 'system' %}[SYSTEM_PROMPT]{{ text }}[/SYSTEM_PROMPT]"
    "{% elif m['role'] == 'user' %}[INST]{{ text }}[/INST]{% else %}{{ text }}</s>{% endif %}{% endfor %}"
)


def _byte_vocab() -> dict[str, int]:
    from tokenizers.pre_tokenizers import ByteLevel

    return {ch: i for i, ch in enumerate(sorted(ByteLevel.alphabet()))}


def qwen_byte_tokenizer():
    from transformers import Qwen2Tokenizer

    tok = Qwen2Tokenizer(
        vocab=_byte_vocab(), merges=[], unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tok.add_special_tokens({"additional_special_tokens": _QWEN_SPECIAL})
    tok.chat_template = _QWEN_TEMPLATE
    return tok


def _tiny_vae_kl(latent_channels: int, scaling: float = 0.3611, shift: float = 0.1159):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        block_out_channels=[8, 16],
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=32,
        scaling_factor=scaling,
        shift_factor=shift,
    )


def tiny_z_image():
    """ZImagePipeline: a Qwen3 text encoder, the Z-Image single-stream transformer, a KL VAE."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    tok = qwen_byte_tokenizer()
    torch.manual_seed(0)
    # fmt: off
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=32, n_layers=1, n_refiner_layers=1,
        n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0,
        axes_dims=[8, 4, 4],
        axes_lens=[1024, 512, 512],  # the real model's: positions for images up to the largest size asked
    )
    # fmt: on
    with torch.no_grad():  # allocated with torch.empty upstream
        transformer.x_pad_token.copy_(torch.ones_like(transformer.x_pad_token))
        transformer.cap_pad_token.copy_(torch.ones_like(transformer.cap_pad_token))
    ids = {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id, "bos_token_id": None}
    text = Qwen3Model(Qwen3Config(**lm_config(len(tok), 16, 2, 2, 2, 16, head_dim=8, **ids)))
    return ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_tiny_vae_kl(4),
        text_encoder=text,
        tokenizer=tok,
        transformer=transformer,
    )


def _tiny_dc_vae():
    """SANA's deep-compression autoencoder at toy width."""
    from diffusers import AutoencoderDC

    blocks = ("ResBlock", "EfficientViTBlock")
    # fmt: off
    return AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=2, scaling_factor=0.41407,
        encoder_block_types=blocks, decoder_block_types=blocks,
        encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
        encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1), decoder_layers_per_block=[1, 1],
        downsample_block_type="conv", upsample_block_type="interpolate",
        decoder_norm_types="rms_norm", decoder_act_fns="silu",
    )
    # fmt: on


def gemma_byte_tokenizer():
    """A Gemma tokenizer over bytes (pad 0, eos 1, bos 2): SANA's text side offline, for any width of Gemma-2."""
    from transformers import GemmaTokenizer

    tok = GemmaTokenizer(
        vocab={**{"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}, **{ch: i + 4 for ch, i in _byte_vocab().items()}},
        merges=[],
    )
    tok.padding_side = "right"
    return tok


def tiny_sana():
    """SanaPipeline: a Gemma2 text encoder, the linear-attention Sana transformer, the deep-compression VAE."""
    import torch
    from diffusers import DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    tok = gemma_byte_tokenizer()
    torch.manual_seed(0)
    # fmt: off
    transformer = SanaTransformer2DModel(
        patch_size=1, in_channels=4, out_channels=4, num_layers=1, num_attention_heads=2, attention_head_dim=4,
        num_cross_attention_heads=2, cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=8,
        sample_size=32,
    )
    # fmt: on
    vae = _tiny_dc_vae()
    ids = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}
    shape = lm_config(len(tok), 8, 1, 2, 2, 32, 1024, head_dim=16, **ids)
    text = Gemma2Model(Gemma2Config(**shape, attn_implementation="eager"))
    # the scheduler the SANA-1.5 checkpoint ships: DPM-Solver++ over flow sigmas
    scheduler = DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return SanaPipeline(tokenizer=tok, text_encoder=text, vae=vae, transformer=transformer, scheduler=scheduler)


def _tiny_qwen25_vl(tok):
    """LongCat's Qwen2.5-VL text encoder at toy width, its special tokens taken from ``tok``."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {t: tok.convert_tokens_to_ids(t) for t in _QWEN_SPECIAL}
    rope = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [1, 1, 2]}
    specials = {"pad_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"], "bos_token_id": None}
    text = lm_config(len(tok), 16, 1, 2, 1, 32, 2048, rope_parameters=rope, **specials)
    # fmt: off
    vision = dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=16, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[0])
    # fmt: on
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **vision_token_ids(tok))
    return Qwen2_5_VLForConditionalGeneration(cfg)


def tiny_longcat():
    """LongCatImagePipeline: a Qwen2.5-VL text encoder (and its processor for prompt rewriting), the LongCat
    MM-DiT, a KL VAE."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, LongCatImagePipeline, LongCatImageTransformer2DModel
    from transformers import Qwen2VLImageProcessorPil, Qwen2VLProcessor

    tok = qwen_byte_tokenizer()
    torch.manual_seed(0)
    text = _tiny_qwen25_vl(tok)
    # fmt: off
    transformer = LongCatImageTransformer2DModel(
        in_channels=64,  # the pipeline's fixed 16 latent channels, packed 2 x 2
        patch_size=1, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=16, pooled_projection_dim=16, axes_dims_rope=[4, 6, 6],
    )
    # fmt: on
    ip = Qwen2VLImageProcessorPil(size={"shortest_edge": 28 * 28, "longest_edge": 56 * 56})
    processor = image_only(Qwen2VLProcessor)(image_processor=ip, tokenizer=tok, chat_template=_QWEN_TEMPLATE)
    return LongCatImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_tiny_vae_kl(16, scaling=0.3611, shift=0.1159),
        text_encoder=text,
        tokenizer=tok,
        text_processor=processor,
        transformer=transformer,
    )


def tiny_flux2():
    """Flux2Pipeline: a Mistral3 (Pixtral vision) text encoder with its processor, the FLUX.2 transformer, the
    FLUX.2 VAE."""
    import torch
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Pipeline, Flux2Transformer2DModel
    from transformers import LlamaTokenizerFast, Mistral3Config, Mistral3ForConditionalGeneration

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "[IMG]": 3, "<pad>": 4, "[IMG_BREAK]": 5, "[IMG_END]": 6}
    for t in ("[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"):
        vocab[t] = len(vocab)
    base = len(vocab)
    vocab.update({ch: base + i for ch, i in _byte_vocab().items()})
    from tokenizers import Tokenizer, models, pre_tokenizers

    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    from tokenizers import decoders

    core.decoder = decoders.ByteLevel()
    tok = LlamaTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        add_bos_token=False,
        add_eos_token=False,
    )
    tok.add_special_tokens(
        {
            "additional_special_tokens": [
                "[IMG]",
                "[IMG_BREAK]",
                "[IMG_END]",
                "[INST]",
                "[/INST]",
                "[SYSTEM_PROMPT]",
                "[/SYSTEM_PROMPT]",
            ]
        }
    )
    # The real checkpoint's text processor is a PixtralProcessor, which needs torchvision; the pipeline only calls
    # its apply_chat_template (text only), which the tokenizer itself provides with the same arguments.
    tok.chat_template = _MISTRAL_TEMPLATE
    torch.manual_seed(0)
    text = Mistral3ForConditionalGeneration(
        Mistral3Config(
            text_config={
                "model_type": "mistral",
                "vocab_size": len(tok),
                "hidden_size": 16,
                "intermediate_size": 32,
                "max_position_embeddings": 1024,
                "num_attention_heads": 4,
                "num_hidden_layers": 3,
                "num_key_value_heads": 2,
                "head_dim": 4,
                "sliding_window": None,
                "bos_token_id": 1,
                "eos_token_id": 2,
                "pad_token_id": 4,
            },
            vision_config={
                "model_type": "pixtral",
                "hidden_size": 16,
                "num_hidden_layers": 1,
                "num_attention_heads": 4,
                "intermediate_size": 32,
                "image_size": 30,
                "patch_size": 6,
                "num_channels": 3,
            },
            image_token_index=3,
            spatial_merge_size=1,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=4,
        )
    )
    # fmt: off
    transformer = Flux2Transformer2DModel(
        in_channels=16,  # 4 latent channels, patchified 2 x 2 by the VAE side
        joint_attention_dim=48,  # 3 stacked hidden-state layers x 16
        patch_size=1, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        timestep_guidance_channels=256, axes_dims_rope=[4, 4, 4, 4],
    )
    # fmt: on
    # fmt: off
    vae = AutoencoderKLFlux2(
        sample_size=32, in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16), use_quant_conv=False, use_post_quant_conv=False,
    )
    # fmt: on
    return Flux2Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text,
        tokenizer=tok,
        transformer=transformer,
    )


def tiny_flux1():
    """FluxPipeline (FLUX.1-dev's classes): CLIP and T5 text encoders, the guidance-distilled FLUX transformer, a
    KL VAE. BoxFlow-GRPO's smoke loop and tests train LoRAs on it."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):  # CLIP's BPE marks a word's last piece with </w>; with no merges, bytes only
        vocab.update({ch + suffix: len(vocab) + i for i, ch in enumerate(_byte_vocab())})
    clip_tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(chr(i), -1.0) for i in range(33, 127)]
    t5_tok = T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)
    torch.manual_seed(0)
    # fmt: off
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(clip_tok), hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        projection_dim=32, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    t5 = T5EncoderModel(T5Config(
        vocab_size=len(t5_tok), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    ))
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 6, 6],
        guidance_embeds=True,
    )
    # fmt: on
    for m in (clip, t5, transformer):
        m.eval()
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(
            use_dynamic_shifting=True,
            base_image_seq_len=256,
            max_image_seq_len=4096,
            base_shift=0.5,
            max_shift=1.15,
            shift=3.0,
        ),  # fmt: skip
        vae=_tiny_vae_kl(4),
        text_encoder=clip,
        tokenizer=clip_tok,
        text_encoder_2=t5,
        tokenizer_2=t5_tok,
        transformer=transformer,
    )


def tiny_flux1_kontext():
    """FluxKontextPipeline (FLUX.1 Kontext's classes, an image editor) over the tiny FLUX.1 components."""
    from diffusers import FluxKontextPipeline

    return FluxKontextPipeline(**tiny_flux1().components)


TINY = {
    "flux1": tiny_flux1,
    "flux1-kontext": tiny_flux1_kontext,
    "flux2": tiny_flux2,
    "z-image": tiny_z_image,
    "longcat": tiny_longcat,
    "sana": tiny_sana,
}
SDG30K = ("flux2", "z-image", "longcat", "sana")  # the four generators of SDG-30K (flux1: BoxFlow-GRPO's base)


def save_tiny_pipelines(out: str | Path, names: list[str] | None = None) -> dict[str, Path]:
    """Build and ``save_pretrained`` each tiny pipeline under ``out/<name>`` (default: the four of SDG-30K)."""
    out = Path(out)
    paths: dict[str, Path] = {}
    for name in names or list(SDG30K):
        pipe: Any = TINY[name]()
        pipe.save_pretrained(out / name)
        paths[name] = out / name
    return paths


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--only", nargs="*", choices=sorted(TINY))
    args = ap.parse_args()
    for name, path in save_tiny_pipelines(args.out, args.only).items():
        print(name, path)


if __name__ == "__main__":
    main()
