"""The GPU check: real-size step time, memory and throughput, in one run of a few minutes on one GPU.

    python bench/gpu_check.py --out gpu_check.json          # on the GPU machine (make gpu-check)
    python bench/gpu_check.py --tiny --out tiny.json        # the same code on CPU with small configs (the tests)

Models are built at full size with random weights from the configs kept in ``bench/gpu_configs/`` (nothing is
downloaded): on the meta device, then materialised on the GPU. Each figure is the median of ``--reps`` timed steps
after a warm-up step, with its peak GPU memory, and, where it has one, the baseline measured in the same run:

1. ``boxflow``: one BoxFlow-GRPO training step of FLUX.1-dev's transformer at 512 px with the recipe's LoRA (r 64)
   and gradient checkpointing: the SDE window's sampling passes (no grad), then the per-token log-probs of the
   trained step, box-mode advantages, the clipped loss and the backward; box mode against scalar mode (ratio).
2. ``detector_sft``: one optimiser step of Qwen3-VL-4B (full fine-tune, vision frozen, AdamW, bf16) on the
   recipe's per-device batch at its sequence length, its image at the recipe's most pixels through the vision
   tower: seconds, tokens/s, peak memory. ``detector_grpo``: one group of 8 completions
   generated with transformers (256 new tokens; the decode rate scales to the recipe's 4,096) and the policy step
   over it (reference pass, clipped objective, backward, AdamW).
3. ``reward``: the GRPO reward of 8 x 16 completions with the embedder (Qwen3-Embedding-0.6B's shape) on the
   GPU, batched as sdg does it, against one embedding call per completion (the released approach): the ratio.
4. ``generation``: images/s of ``sdg generate`` against a plain diffusers loop (one prompt at a time) on the same
   SANA-1.5 1.6B pipeline at 1024 px, 20 steps, loading excluded: the ratio.
5. ``build``: the cold real-size build (``bench/bench_build_real.py``) against a copy of the same bytes, on the
   machine's cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIGS = Path(__file__).resolve().parent / "gpu_configs"


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, reps: int, warmup: int = 1) -> dict[str, Any]:
    """Median seconds of ``reps`` calls after ``warmup`` untimed ones, and the peak memory over the timed ones."""
    import torch

    for _ in range(warmup):
        fn()
    _sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return {"seconds": statistics.median(times), "all_seconds": times, "peak_gib": peak}


def _weights_later():
    """Build a model with its parameters on the meta device (no memory, no init) and its buffers real (rotary
    frequencies and the like are computed, not learned: they must hold their values)."""
    from accelerate import init_empty_weights

    return init_empty_weights(include_buffers=False)


def _materialise(model, device: str, dtype):
    """A model built under :func:`_weights_later`, given storage on ``device`` and random weights there (its
    buffers carried over as computed, its tied weights tied again)."""
    import torch

    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    model = model.to_empty(device=device)
    with torch.no_grad():
        for n, b in model.named_buffers():
            b.copy_(buffers[n])
        model = model.to(dtype)
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    tie = getattr(model, "tie_weights", None)
    if callable(tie):  # tied embeddings (Qwen3-VL-4B's): one tensor, as the checkpoint has (to_empty untied them)
        tie()
    return model


def _config(name: str, tiny: bool) -> dict[str, Any]:
    data = json.loads((CONFIGS / f"{name}.json").read_text())
    return data["tiny" if tiny else "full"]


# ------------------------------------------------------------------ 1. BoxFlow-GRPO step
def boxflow(device: str, tiny: bool, reps: int) -> dict[str, Any]:
    import torch
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from peft import LoraConfig

    from sdg_data.boxes import Box
    from sdg_data.records import Defect
    from train.boxflow.advantages import advantages, clipped_loss, penalty_maps
    from train.boxflow.flow_models import FLUX_LORA_TARGETS
    from train.boxflow.sde import sde_step

    cfg = _config("flux1_dev_transformer", tiny)
    recipe = {"resolution": 64 if tiny else 512, "group": 4 if tiny else 16, "batch": 2, "steps": 10, "rank": 64}
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    with _weights_later():
        model = FluxTransformer2DModel(**cfg)
    model = _materialise(model, device, dtype)
    model.add_adapter(LoraConfig(r=4 if tiny else recipe["rank"], lora_alpha=8 if tiny else 128,
                                 target_modules=FLUX_LORA_TARGETS, init_lora_weights="gaussian"))  # fmt: skip
    for n, p in model.named_parameters():
        p.requires_grad_("lora" in n)
    model.enable_gradient_checkpointing()
    side = recipe["resolution"] // 16  # tokens per side: VAE 8x, then 2 x 2 packing
    n, length, channels = recipe["batch"], side * side, cfg["in_channels"]
    text_len = 16 if tiny else 512
    g = torch.Generator(device=device).manual_seed(0)
    latents = torch.randn((n, length, channels), generator=g, device=device)
    text = torch.randn((n, text_len, cfg["joint_attention_dim"]), generator=g, device=device, dtype=dtype)
    pooled = torch.randn((n, cfg["pooled_projection_dim"]), generator=g, device=device, dtype=dtype)
    img_ids = FluxPipeline._prepare_latent_image_ids(n, side, side, device, dtype)
    txt_ids = torch.zeros((text_len, 3), device=device, dtype=dtype)
    guidance = torch.full((n,), 3.5, device=device)

    def velocity(x, sigma):
        return model(hidden_states=x.to(dtype), timestep=torch.full((n,), sigma, device=device, dtype=dtype),
                     guidance=guidance, pooled_projections=pooled, encoder_hidden_states=text, txt_ids=txt_ids,
                     img_ids=img_ids, return_dict=False)[0]  # fmt: skip

    sigmas = [1.0 - k / recipe["steps"] for k in range(recipe["steps"])] + [0.0]
    defects = [[Defect(Box(100, 100, 400, 300), "artifact", "x", 70)], []] * (n // 2)
    w_art, w_mis = penalty_maps(defects, side, side)
    rewards = torch.tensor([0.7, 0.4] * (n // 2))
    groups = torch.zeros(n, dtype=torch.long)

    def sample() -> tuple[torch.Tensor, torch.Tensor]:
        """The round's sampling: every step with no grad, the window's step (index 1) an SDE step, kept."""
        x = latents
        with torch.no_grad():
            for k in range(recipe["steps"]):
                step = sde_step(velocity(x, sigmas[k]), x, sigmas[k], sigmas[k + 1], 0.7 if k == 1 else 0.0,
                                generator=g)  # fmt: skip
                if k == 1:
                    kept = (x, step.sample, step.log_prob)
                x = step.sample
        return kept

    x_window, x_next, old_logp = sample()

    def train(mode: str) -> None:
        step = sde_step(velocity(x_window, sigmas[1]), x_window, sigmas[1], sigmas[2], 0.7, prev_sample=x_next)
        adv = advantages(mode, rewards, groups, w_art, w_mis).values.to(device)
        parts = clipped_loss(step.log_prob, old_logp, adv, 1e-4, "token" if mode == "box" else "image")
        parts.loss.backward()
        model.zero_grad(set_to_none=True)

    out = {"resolution": recipe["resolution"], "batch": n, "tokens": length, "lora_rank": model.peft_config[
        "default"].r, "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "params": sum(p.numel() for p in model.parameters())}  # fmt: skip
    out["sampling_10_steps"] = timed(sample, device, reps)
    out["train_step_box"] = timed(lambda: train("box"), device, reps)
    out["train_step_scalar"] = timed(lambda: train("scalar"), device, reps)
    out["box_over_scalar"] = out["train_step_box"]["seconds"] / out["train_step_scalar"]["seconds"]
    return out


# ------------------------------------------------------------------ 2. detector SFT step
def detector_sft(device: str, tiny: bool, reps: int) -> dict[str, Any]:
    """One SFT step as the recipe runs it: one sample (per-device batch 1) of the recipe's length, its image at the
    recipe's most pixels through the frozen vision tower (1,225 merged image tokens of 5,100), the rest text; loss on
    every token (the recipe masks the prompt: the same compute)."""
    import inspect

    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from train.detector.modeling import freeze_vision

    cfg = Qwen3VLConfig(**_config("qwen3_vl_4b", tiny))
    vocab = cfg.text_config.vocab_size
    if cfg.image_token_id >= vocab:  # the tiny vocabulary: the image placeholder moves inside it
        cfg.image_token_id = vocab - 1
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    with _weights_later():
        model = Qwen3VLForConditionalGeneration(cfg)
    model = _materialise(model, device, dtype)
    frozen = freeze_vision(model)
    model.gradient_checkpointing_enable()
    model.config.use_cache = False
    vision = cfg.vision_config
    side = 4 if tiny else 70  # patches a side: 70 x 70 x 16^2 = 1,254,400 px, under the recipe's 1,280,000
    merged = side * side // vision.spatial_merge_size**2
    seq = 64 if tiny else 5100  # the SFT recipe's max_length
    text = torch.randint(0, min(vocab - 8, 100_000), (1, seq - merged), device=device)  # never a special token
    image = torch.full((1, merged), cfg.image_token_id, device=device)
    ids = torch.cat([text[:, :8], image, text[:, 8:]], dim=1)
    patch = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    pixels = torch.randn((side * side, patch), device=device, dtype=dtype)
    grid = torch.tensor([[1, side, side]], device=device)
    extra = {}
    if "mm_token_type_ids" in inspect.signature(type(model.model).forward).parameters:  # newer transformers
        extra["mm_token_type_ids"] = (ids == cfg.image_token_id).long()  # the processor's: 0 text, 1 image
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-5, fused=device != "cpu")

    def step() -> None:
        loss = model(input_ids=ids, pixel_values=pixels, image_grid_thw=grid, labels=ids, **extra).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    out = timed(step, device, reps)
    out |= {"sequence": seq, "image_tokens": merged, "image_pixels": side * side * vision.patch_size**2,
            "batch": 1, "tokens_per_s": seq / out["seconds"], "params": sum(p.numel() for p in model.parameters()),
            "frozen_vision_params": frozen}  # fmt: skip
    return out


# ------------------------------------------------------------------ 2b. detector GRPO step
def detector_grpo(device: str, tiny: bool, reps: int) -> dict[str, Any]:
    """One GRPO round for a group of the recipe's size (8 completions of one prompt): the generation with
    transformers' ``generate`` (the recipe samples with vLLM, which the device lacks: a floor, not the recipe's
    speed), then the policy step over the group: the reference pass (beta 0.01), the per-token log-probs, the
    clipped objective, the backward and AdamW. Completions are cut at ``new_tokens`` (random weights never stop);
    the decode rate gives the recipe's 4,096 by proportion. The prompt is 1,024 text tokens standing in for the
    recipe's image (~980 merged tokens at its most pixels) and caption."""
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    cfg = Qwen3VLConfig(**_config("qwen3_vl_4b", tiny))
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    with _weights_later():
        model = Qwen3VLForConditionalGeneration(cfg)
    model = _materialise(model, device, dtype)
    group, prompt_len, new_tokens = 8, (32 if tiny else 1024), (8 if tiny else 256)
    vocab = cfg.text_config.vocab_size
    prompt = torch.randint(0, vocab, (1, prompt_len), device=device).repeat(group, 1)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-6, fused=device != "cpu")
    made: dict[str, Any] = {}

    def generate() -> None:
        model.eval()
        model.config.use_cache = True
        with torch.no_grad():
            made["seq"] = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                                         temperature=1.0, top_p=0.85, max_new_tokens=new_tokens,
                                         min_new_tokens=new_tokens, pad_token_id=0)  # fmt: skip

    def token_logps(seq):
        logits = model(input_ids=seq).logits[:, prompt_len - 1 : -1].float()
        return torch.log_softmax(logits, -1).gather(-1, seq[:, prompt_len:, None]).squeeze(-1)

    def step() -> None:
        seq = made["seq"]
        model.train()
        model.config.use_cache = False
        model.gradient_checkpointing_enable()
        adv = torch.randn(group, 1, device=device)
        with torch.no_grad():
            ref = token_logps(seq)  # the reference model's pass (the same weights stand in: the same compute)
        logp = token_logps(seq)
        ratio = torch.exp(logp - logp.detach())
        loss = -(torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv) - 0.01 * (logp - ref)).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.gradient_checkpointing_disable()

    out = {"group": group, "prompt_tokens": prompt_len, "new_tokens": new_tokens}
    out["generation"] = timed(generate, device, reps)
    out["policy_step"] = timed(step, device, reps)
    out["decode_tokens_per_s"] = group * new_tokens / out["generation"]["seconds"]
    out["recipe_generation_s_estimate"] = out["generation"]["seconds"] * 4096 / new_tokens
    return out


# ------------------------------------------------------------------ 3. the GRPO reward
def reward(device: str, tiny: bool, reps: int) -> dict[str, Any]:
    import random

    import torch
    from transformers import Qwen3Config, Qwen3Model

    from sdg_data.scoring.embedding import CachedEmbedder, TransformersEmbedder
    from sdg_data.scoring.reward import RewardConfig, reward_batch
    from sdg_data.testkit.pipelines import qwen_byte_tokenizer

    sys.path.insert(0, str(ROOT / "bench"))
    from synth import jittered, response, test_set

    with tempfile.TemporaryDirectory() as tmp:
        with _weights_later():
            model = Qwen3Model(Qwen3Config(**_config("qwen3_embedding_0_6b", tiny)))
        model = _materialise(model, "cpu", torch.float32)
        model.save_pretrained(tmp)
        qwen_byte_tokenizer().save_pretrained(tmp)
        del model
        inner = TransformersEmbedder(tmp, device=device, dtype="bfloat16" if device.startswith("cuda") else "float32")
    rng = random.Random(0)
    gt = test_set(8, seed=3)
    completions = [[response(rng, jittered(rng, r.defects)) for _ in range(16)] for r in gt]  # 8 prompts x 16
    rcfg = RewardConfig()

    def batched() -> None:
        emb = CachedEmbedder(inner)
        reward_batch([c for cs in completions for c in cs], [r.defects for r in gt for _ in range(16)], emb, rcfg)

    def one_by_one() -> None:
        for r, cs in zip(gt, completions, strict=True):
            for c in cs:
                reward_batch([c], [r.defects], CachedEmbedder(inner), rcfg)

    out = {
        "completions": 128,
        "batched": timed(batched, device, reps),
        "per_completion": timed(one_by_one, device, reps),
    }
    out["ratio"] = out["per_completion"]["seconds"] / out["batched"]["seconds"]
    return out


# ------------------------------------------------------------------ 5. generation
def generation(device: str, tiny: bool, reps: int) -> dict[str, Any]:
    """``sdg generate`` (its runner: plan, batches, checks, PNGs, provenance, manifest) against a plain diffusers
    loop (one ``pipe(prompt)`` a prompt, each image saved as PNG) on the same SANA-1.5 1.6B pipeline folder: images
    per second, model loading excluded from both. SANA because it is the one of the four a random-weight copy of
    fits a quick save and load (9 GB in bf16)."""
    import torch
    from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    from sdg_data.config import load_config
    from sdg_data.generate.runner import GenerateConfig, generate
    from sdg_data.testkit.pipelines import gemma_byte_tokenizer

    cfg = _config("sana_1_5_1_6b", tiny)
    run = cfg["run"]
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    with _weights_later():
        transformer = SanaTransformer2DModel(**cfg["transformer"])
        vae = AutoencoderDC(**cfg["vae"])
        text = Gemma2Model(Gemma2Config(**cfg["text_encoder"], attn_implementation="eager"))
    pipe = SanaPipeline(
        tokenizer=gemma_byte_tokenizer(), text_encoder=_materialise(text, device, dtype),
        vae=_materialise(vae, device, dtype), transformer=_materialise(transformer, device, dtype),
        scheduler=DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),
    )  # fmt: skip
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in
              (("transformer", pipe.transformer), ("vae", pipe.vae), ("text_encoder", pipe.text_encoder))}  # fmt: skip
    prompts = [f"a red cube on a blue table, view {k}" for k in range(run["images"])]
    call = {"max_sequence_length": run["max_sequence_length"], "complex_human_instruction": None}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "sana"
        t0 = time.perf_counter()
        pipe.save_pretrained(folder)
        saved_s = time.perf_counter() - t0
        del pipe, transformer, vae, text
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        (Path(tmp) / "prompts.txt").write_text("\n".join(prompts) + "\n")

        def ours(k: int) -> float:
            gcfg = load_config(GenerateConfig, None, {
                "generator": ["SANA-1.5-1.6B"], "model_paths": {"SANA-1.5-1.6B": str(folder)},
                "height": run["resolution"], "width": run["resolution"], "steps": run["steps"],
                "batch_size": run["batch_size"], "device": device, "dtype": str(dtype).removeprefix("torch."),
                "test_fraction": 0.0, "progress": False, "call_kwargs": {"SANA-1.5-1.6B": call},
                "base_seed": 1000 * k,
            })  # fmt: skip
            s = generate(str(Path(tmp) / "prompts.txt"), Path(tmp) / f"ours{k}", gcfg)
            if s["images"] != len(prompts):
                raise RuntimeError(f"sdg generate made {s['images']} of {len(prompts)} images: {s}")
            rank = s["ranks"][0]
            return rank["seconds"] - rank["load_s"]

        def plain(k: int) -> float:
            p = SanaPipeline.from_pretrained(folder, torch_dtype=dtype).to(device)
            p.set_progress_bar_config(disable=True)
            _sync(device)
            t0 = time.perf_counter()
            for i, prompt in enumerate(prompts):
                img = p(prompt, height=run["resolution"], width=run["resolution"], num_inference_steps=run["steps"],
                        guidance_scale=run["guidance_scale"], generator=torch.Generator(device).manual_seed(i + k),
                        **call).images[0]  # fmt: skip
                img.save(Path(tmp) / f"plain{k}-{i}.png")
            _sync(device)
            del p
            return time.perf_counter() - t0

        ours(reps)  # warm-up: kernels, allocator, the page cache of the weights (its own seeds and folder)
        runs = min(reps, 2)  # each run is 8 images and a 9 GB load: two runs each keep the check inside 8 minutes
        ours_s = statistics.median(ours(k) for k in range(runs))
        plain_s = statistics.median(plain(k) for k in range(runs))
    n = len(prompts)
    return {"resolution": run["resolution"], "steps": run["steps"], "images": n, "batch_size": run["batch_size"],
            "params": params, "save_s": saved_s, "sdg_generate_images_per_s": n / ours_s,
            "plain_loop_images_per_s": n / plain_s,
            "ratio": plain_s / ours_s}  # fmt: skip


# ------------------------------------------------------------------ 4. the cold real-size build
def build(images: int) -> dict[str, Any]:
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_build_real.py"), "--images", str(images)],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    return {"images": images, "returncode": res.returncode, "output": res.stdout[-3000:] + res.stderr[-1000:]}


FIGURES = {"boxflow": boxflow, "detector_sft": detector_sft, "detector_grpo": detector_grpo, "reward": reward,
           "generation": generation}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="small configs on CPU: the same code path, for the tests")
    ap.add_argument("--out", type=Path, required=True, help="where to write the figures (JSON)")
    ap.add_argument("--only", nargs="*", choices=[*FIGURES, "build"], default=None)
    ap.add_argument("--reps", type=int, default=3, help="timed steps per figure (the median is reported)")
    ap.add_argument("--build-images", type=int, default=300)
    args = ap.parse_args(argv)
    import torch

    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    if not args.tiny and device == "cpu":
        raise SystemExit("no GPU: run with --tiny for the CPU path, or on the GPU machine (make gpu-check)")
    import diffusers
    import transformers

    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"), "tiny": args.tiny, "device": torch.cuda.get_device_name() if device ==
        "cuda" else platform.processor() or "cpu", "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "diffusers": diffusers.__version__, "figures": {},
    }  # fmt: skip
    todo = args.only or [*FIGURES, "build"]
    for name in todo:
        t0 = time.perf_counter()
        try:
            if name == "build":
                fig = build(args.build_images) if not args.tiny else {"skipped": "needs real-size images"}
            else:
                fig = FIGURES[name](device, args.tiny, args.reps)
        except Exception as exc:  # noqa: BLE001 - one figure failing (out of memory) must not lose the others
            fig = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
        fig["wall_s"] = round(time.perf_counter() - t0, 1)
        report["figures"][name] = fig
        if device == "cuda":
            torch.cuda.empty_cache()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))  # after each figure: a timeout keeps what was measured
        print(f"{name}: {_line(fig)}", flush=True)
    return report


def _line(fig: dict[str, Any]) -> str:
    if "error" in fig or "skipped" in fig:
        return fig.get("error") or fig["skipped"]
    parts = []
    for k, v in fig.items():
        if isinstance(v, dict) and "seconds" in v:
            mem = f", peak {v['peak_gib']:.1f} GiB" if v.get("peak_gib") is not None else ""
            parts.append(f"{k} {v['seconds']:.3f} s{mem}")
        elif k in ("box_over_scalar", "ratio", "tokens_per_s", "sdg_generate_images_per_s", "plain_loop_images_per_s",
                   "decode_tokens_per_s"):  # fmt: skip
            parts.append(f"{k} {v:.2f}")
    if "seconds" in fig:
        mem = f", peak {fig['peak_gib']:.1f} GiB" if fig.get("peak_gib") is not None else ""
        parts.insert(0, f"{fig['seconds']:.3f} s{mem}")
    return "; ".join(parts) or f"done in {fig['wall_s']} s"


if __name__ == "__main__":
    main()
