"""The GPU check's code path, on CPU with small configs (``--tiny``), so it cannot rot before a GPU runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_its_tiny_path(tmp_path):
    out = tmp_path / "tiny.json"
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--tiny", "--reps", "1", "--out",
                          str(out)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out.read_text())
    figs = report["figures"]
    assert report["tiny"] and not any("error" in f for f in figs.values()), figs
    box = figs["boxflow"]
    assert box["train_step_box"]["seconds"] > 0 and box["box_over_scalar"] > 0 and box["trainable_params"] > 0
    sft = figs["detector_sft"]
    assert sft["tokens_per_s"] > 0 and sft["image_tokens"] > 0 and sft["frozen_vision_params"] > 0
    assert figs["reward"]["ratio"] > 0
    grpo = figs["detector_grpo"]
    assert grpo["generation"]["seconds"] > 0 and grpo["policy_step"]["seconds"] > 0 and grpo["decode_tokens_per_s"] > 0
    gen = figs["generation"]
    assert gen["sdg_generate_images_per_s"] > 0 and gen["plain_loop_images_per_s"] > 0 and gen["images"] == 4
    for name in ("flux1_dev_transformer", "qwen3_vl_4b", "qwen3_embedding_0_6b", "sana_1_5_1_6b"):
        full = json.loads((ROOT / "bench" / "gpu_configs" / f"{name}.json").read_text())["full"]
        assert full  # the real sizes are kept beside the tiny ones


def test_without_a_gpu_the_full_check_says_so(tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--out", str(tmp_path / "x.json")],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode != 0 and "no GPU" in res.stderr
