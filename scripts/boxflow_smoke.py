"""BoxFlow-GRPO's smoke loop (``make boxflow-smoke``), offline on a CPU, through the ``sdg`` command as a user runs it:

1. build a tiny random FLUX.1 pipeline (the real classes, a few thousand weights);
2. start loopback judge and detector servers (sdg_data.testkit.reward_servers);
3. ``sdg train boxflow`` for 3 steps of ``box`` mode;
4. ``sdg generate --lora`` with the trained LoRA, then ``sdg detect`` over the images through the detector;
5. ``sdg eval-lora``: the same prompts with and without the LoRA, paired;

and writes ``outputs/boxflow-smoke/summary.json`` (steps, rewards, penalty share, images, detections).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdg_data.testkit.reward_servers import RewardServers  # noqa: E402


PROMPTS = ["a red apple on a wooden table", "a cat asleep on a blue sofa", "two dogs running in the snow"]


def sdg(*args: str) -> None:
    cmd = [str(Path(sys.executable).parent / "sdg"), *args]
    print("$ sdg " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "outputs" / "boxflow-smoke"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    from sdg_data.testkit.pipelines import save_tiny_pipelines

    model = save_tiny_pipelines(out / "models", ["flux1"])["flux1"]
    prompts = out / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    gen_recipe = out / "generate.yaml"
    gen_recipe.write_text(
        "height: 64\nwidth: 64\nsteps: 4\nguidance_scale: 3.5\ncall_kwargs:\n  flux1: {max_sequence_length: 32}\n"
    )
    run = out / "run"
    with RewardServers(latency=0.02) as servers:
        sdg("train", "boxflow", "--config", "boxflow/smoke", "--model", str(model),
            "--prompts", str(prompts), "--judge-url", servers.judge_url, "--detector-url", servers.detector_url,
            "--output_dir", str(run), "--max_steps", "3", "--updates_per_step", "1")  # fmt: skip
        sdg("generate", "--prompts", str(prompts), "--out", str(out / "gen"), "--generator", str(model),
            "--lora", str(run), "--config", str(gen_recipe))  # fmt: skip
        sdg("detect", str(out / "gen" / "manifest.jsonl"), "--out", str(out / "detect"), "--backend", "openai",
            "--base-url", servers.detector_url, "--model", "sdg-detector")  # fmt: skip
        sdg("eval-lora", "--prompts", str(prompts), "--out", str(out / "eval"), "--generator", str(model),
            "--lora", str(run), "--generate-recipe", str(gen_recipe), "--detector-url", servers.detector_url,
            "--seeds", "2")  # fmt: skip
    train = json.loads((run / "summary.json").read_text())
    detect = json.loads((out / "detect" / "detect.summary.json").read_text())
    ev = json.loads((out / "eval" / "lora_eval.json").read_text())
    summary = {
        "steps": train["steps"],
        "mode": train["mode"],
        "rewards": [h["reward_mean"] for h in train["history"]],
        "reward_std": [h["reward_std"] for h in train["history"]],
        "penalty_share": [h["penalty_share"] for h in train["history"]],
        "artifacts_per_image": [h["artifacts_per_image"] for h in train["history"]],
        "detector_failures": sum(h["detector_failures"] for h in train["history"]),
        "lora": train["lora"],
        "images": sorted(str(p.relative_to(out)) for p in (out / "gen" / "images").rglob("*.png")),
        "detected": detect["predicted"],
        "eval": {k: ev["paired"][k]["diff"] for k in ("defects_per_image", "clean_rate")},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
