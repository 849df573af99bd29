"""Tiny random-weight models of the real classes, built offline from configs, for tests and benchmarks.

Same code paths as the real checkpoints (Qwen/Qwen3-Embedding-0.6B is a Qwen3Model), a ten-thousandth the size.
"""

from __future__ import annotations

from pathlib import Path


def lm_config(
    vocab_size: int,
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int | None = None,
    intermediate: int | None = None,
    max_positions: int = 512,
    **extra,
) -> dict:
    """The shape of a toy language model, in the keyword names transformers' decoder configs share (Qwen, Gemma,
    Mistral, BERT): one place that sizes every tiny text model of tests, benchmarks and the demo."""
    out = {
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": intermediate or 2 * hidden,
        "max_position_embeddings": max_positions,
        **extra,
    }
    if kv_heads is not None:
        out["num_key_value_heads"] = kv_heads
    return out


def vision_token_ids(tok) -> dict[str, int]:
    """The ids a Qwen-VL config needs for its image and video placeholders, read from ``tok``."""
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                                       "<|vision_end|>")}  # fmt: skip
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }


def save_tiny_qwen3_text_model(out: str | Path, tokenizer, seed: int = 0) -> Path:
    """Save a 2-layer, 32-wide random Qwen3Model with ``tokenizer`` to ``out`` (loadable by AutoModel)."""
    import torch
    from transformers import Qwen3Config, Qwen3Model

    out = Path(out)
    torch.manual_seed(seed)
    ids = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id, "bos_token_id": None}
    cfg = Qwen3Config(**lm_config(len(tokenizer), 32, 2, 4, 2, 64, head_dim=8, **ids))
    Qwen3Model(cfg).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def byte_level_qwen_tokenizer():
    """A Qwen2Tokenizer over the 256 byte symbols (no merges): one token a byte, no files needed."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    vocab = {ch: i for i, ch in enumerate(sorted(ByteLevel.alphabet()))}
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]})
    return tok


def word_level_tokenizer(words: list[str]):
    """A whitespace word-level tokenizer: about one token a word, like a real BPE vocabulary on plain English."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for w in ["<|endoftext|>", "<unk>", ".", *sorted(set(words)), *sorted({w.capitalize() for w in words})]:
        vocab.setdefault(w, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<|endoftext|>", unk_token="<unk>")


# ------------------------------------------------------------------ tiny random detector (tests, smoke runs)
_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<think>",
    "</think>",
]


def save_tiny_qwen3_vl(out: str | Path, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """A random-weight Qwen3VLForConditionalGeneration with a byte-level tokenizer, the real Qwen3-VL chat template
    (shipped by trl) and an image-only processor: the same classes as Qwen3-VL-4B, a few hundred thousand weights.
    Built offline in about a second."""
    import torch
    import trl
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import (
        Qwen2Tokenizer,
        Qwen2VLImageProcessorPil,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
    )

    from sdg_data.io.vision_compat import image_only

    out = Path(out)
    torch.manual_seed(seed)
    vocab = {ch: i for i, ch in enumerate(sorted(ByteLevel.alphabet()))}
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": _SPECIAL})
    template = (Path(trl.__file__).parent / "chat_templates" / "qwen3_vl.jinja").read_text(encoding="utf-8")
    tok.chat_template = template
    ids = {t: tok.convert_tokens_to_ids(t) for t in _SPECIAL}
    head_dim = 16
    rope = {"rope_type": "default", "rope_theta": 5e6, "mrope_section": [4, 2, 2], "mrope_interleaved": True}
    specials = {"pad_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"], "bos_token_id": None}
    heads = hidden // head_dim
    text = lm_config(len(tok), hidden, layers, heads, max(1, heads // 2), max_positions=8192, head_dim=head_dim,
                     rope_parameters=rope, tie_word_embeddings=True, **specials)  # fmt: skip
    # fmt: off
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=hidden, num_position_embeddings=64,
                  deepstack_visual_indexes=[1])
    # fmt: on
    cfg = Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **vision_token_ids(tok))
    model = Qwen3VLForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)
    ip = Qwen2VLImageProcessorPil(
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
        size={"shortest_edge": 32 * 32, "longest_edge": 64 * 64},
    )
    image_only(Qwen3VLProcessor)(image_processor=ip, tokenizer=tok, chat_template=template).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m sdg_data.testkit.models OUT``: write a tiny random Qwen3-VL detector to OUT."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(save_tiny_qwen3_vl(args.out, seed=args.seed))


if __name__ == "__main__":
    main()
