"""sdg generate's overhead over a plain diffusers loop on the same tiny pipeline and prompts, in the same run.

    python bench/bench_generate.py [--prompts 200] [--generator z-image] [--side 64] [--repeats 5]

Both sides load the pipeline from disk, then make one PNG per prompt with the same seed, size and steps; the plain
loop is what a researcher would write (pipe(...).images[0].save). The tool adds planning, atomic writes, the
manifest (fsynced per line), output checks and the summary. Best of --repeats for each, alternating.
The GPU comparison at real size (1024 x 1024, random-init weights) needs the device; see the README.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sdg_data.generate.registry import ALIASES, REGISTRY  # noqa: E402
from sdg_data.generate.runner import GenerateConfig, generate  # noqa: E402
from sdg_data.testkit.pipelines import save_tiny_pipelines  # noqa: E402


def plain_loop(model_dir: Path, prompts: list[str], out: Path, side: int, steps: int, call_kwargs: dict) -> float:
    import diffusers
    import torch

    t0 = time.perf_counter()
    name = ALIASES[model_dir.name]
    pipe = getattr(diffusers, REGISTRY[name].pipeline_class).from_pretrained(model_dir, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    out.mkdir(parents=True)
    for i, prompt in enumerate(prompts):
        image = pipe(
            prompt=prompt,
            height=side,
            width=side,
            num_inference_steps=steps,
            guidance_scale=REGISTRY[name].guidance_scale,
            generator=torch.Generator("cpu").manual_seed(0),
            **call_kwargs,
        ).images[0]
        image.save(out / f"{i}.png")
    return time.perf_counter() - t0


def tool(model_dir: Path, src: Path, out: Path, side: int, steps: int, call_kwargs: dict) -> float:
    name = ALIASES[model_dir.name]
    cfg = GenerateConfig(generator=[name], model_paths={name: str(model_dir)}, height=side, width=side, steps=steps,
                         device="cpu", dtype="float32", call_kwargs={name: call_kwargs}, progress=False)  # fmt: skip
    t0 = time.perf_counter()
    s = generate(src, out, cfg)
    assert s["images"] == s["planned_images"], s
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--generator", default="z-image", choices=sorted(ALIASES))
    ap.add_argument("--side", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    root = Path(tempfile.mkdtemp(prefix="bench-gen-"))
    model_dir = save_tiny_pipelines(root / "models", [args.generator])[args.generator]
    prompts = [f"a photo of object number {i} on a wooden table" for i in range(args.prompts)]
    src = root / "prompts.jsonl"
    src.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    kw = {"max_sequence_length": 32} if args.generator in ("z-image", "sana") else {}
    if args.generator == "flux2":
        kw = {"max_sequence_length": 32, "text_encoder_out_layers": (1, 2, 3)}
    if args.generator == "longcat":
        kw = {"enable_prompt_rewrite": False}
    plain, ours = [], []
    for r in range(args.repeats):
        plain.append(plain_loop(model_dir, prompts, root / f"plain{r}", args.side, args.steps, kw))
        ours.append(tool(model_dir, src, root / f"tool{r}", args.side, args.steps, kw))
    p, o = min(plain), min(ours)
    print(f"generator {args.generator} (tiny), {args.prompts} prompts, {args.side}x{args.side}, {args.steps} steps")
    print(f"plain diffusers loop: {p:.3f} s ({args.prompts / p:.1f} img/s)   runs {[round(x, 3) for x in plain]}")
    print(f"sdg generate:         {o:.3f} s ({args.prompts / o:.1f} img/s)   runs {[round(x, 3) for x in ours]}")
    print(f"overhead: {100 * (o / p - 1):+.1f}% (target < 10%)")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
