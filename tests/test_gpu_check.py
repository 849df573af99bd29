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
    assert all(n > 0 for n in gen["params"].values()) and box["params"] > box["trainable_params"]  # shapes to check
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


def test_the_full_size_configs_have_the_published_sizes():
    """The GPU figures are only as real as the shapes: each full config, built on the meta device (no memory), has
    its model card's parameter count (tied embeddings counted once, as the checkpoint stores them)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from diffusers import AutoencoderDC, FluxTransformer2DModel, SanaTransformer2DModel
    from gpu_check import _config, _weights_later
    from transformers import (
        Gemma2Config,
        Gemma2Model,
        Qwen3Config,
        Qwen3Model,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
    )

    def billions(model) -> float:
        tie = getattr(model, "tie_weights", None)
        if callable(tie):
            tie()
        return sum(p.numel() for p in model.parameters()) / 1e9

    sana = _config("sana_1_5_1_6b", False)
    with _weights_later():  # built with parameters on meta; counted (and tied) outside, as _materialise does
        models = {
            "FLUX.1-dev transformer": (FluxTransformer2DModel(**_config("flux1_dev_transformer", False)), 11.9),
            "Qwen3-VL-4B": (Qwen3VLForConditionalGeneration(Qwen3VLConfig(**_config("qwen3_vl_4b", False))), 4.44),
            "Qwen3-Embedding-0.6B": (Qwen3Model(Qwen3Config(**_config("qwen3_embedding_0_6b", False))), 0.60),
            "SANA-1.5 1.6B transformer": (SanaTransformer2DModel(**sana["transformer"]), 1.60),
            "DC-AE f32c32": (AutoencoderDC(**sana["vae"]), 0.31),
            "Gemma-2-2B": (Gemma2Model(Gemma2Config(**sana["text_encoder"])), 2.61),
        }
    got = {name: (billions(model), want) for name, (model, want) in models.items()}
    off = {name: round(b, 3) for name, (b, want) in got.items() if abs(b - want) > 0.03 * want}
    assert not off, off
