"""``sdg eval-lora``: does a LoRA (e.g. from BoxFlow-GRPO) make fewer, smaller defects than its base model?

The prompt set (a DrawBench-style text file, one prompt a line) is generated twice with the same seeds, without and
with the LoRA, through ``sdg generate``; both sets go through ``sdg detect``. Reported per arm: the clean-image
rate, defects per image and mean importance by type; and per prompt the paired difference (LoRA minus base,
averaged over seeds) with a t confidence interval. Scorer hooks (``module:function``, ``f(images, prompts) ->
list[float]``) add any metric whose weights the user has (PickScore, CLIPScore, HPSv3, ...), paired the same way.

Output: ``OUT/lora_eval.json`` and ``OUT/lora_eval.md`` (the table), plus each arm's images and predictions.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

from sdg_data.config import Bounds, Positive, load_config
from sdg_data.io.files import write_json, write_text
from sdg_data.io.jsonl import iter_jsonl


LABELS = ("artifact", "misalignment")


@dataclass
class LoraEvalConfig:
    generator: str = field(
        default="FLUX.1-dev", metadata={"help": "the base model: a registry name, hub id or pipeline folder"}
    )
    lora: str | None = field(
        default=None,
        metadata={"help": "the LoRA to compare (a folder from sdg train boxflow, or a .safetensors file)"},
    )
    lora_scale: float = field(default=1.0, metadata={"help": "how strongly the LoRA applies"})
    seeds: Positive = field(
        default=1, metadata={"help": "images per prompt and arm, seeds 0 .. seeds - 1 (the same in both arms)"}
    )
    generate_recipe: str | None = field(
        default=None, metadata={"help": "a `sdg generate` YAML (size, steps, device); default: 512 px, 28 steps"}
    )
    detect_recipe: str | None = field(
        default=None, metadata={"help": "a `sdg detect` YAML; default: a served detector at detector_url"}
    )
    detector_url: str | None = field(
        default=None, metadata={"help": "the served SDG detector (sets the openai backend), e.g. http://H:17142/v1"}
    )
    scorers: list[str] = field(
        default_factory=list,
        metadata={
            "flag": "--scorer",
            "help": (
                "Repeatable. module:function taking (images, prompts) and "
                "returning a score per image (higher is better)."
            ),
        },
    )
    confidence: Annotated[float, Bounds(gt=0, lt=1)] = field(
        default=0.95, metadata={"help": "of the paired differences' intervals"}
    )

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")


def _generate_config(cfg: LoraEvalConfig, lora: str | None):
    from sdg_data.generate.runner import GenerateConfig

    defaults = {"height": 512, "width": 512, "steps": 28, "guidance_scale": 3.5}  # the paper's DrawBench setting
    base = load_config(GenerateConfig, cfg.generate_recipe) if cfg.generate_recipe else GenerateConfig(**defaults)
    return replace(base, generator=[cfg.generator], assign="all", seeds=cfg.seeds, base_seed=0, lora=lora,
                   lora_scale=cfg.lora_scale, test_fraction=0.0)  # fmt: skip


def _detect_config(cfg: LoraEvalConfig):
    from train.detector.detect import DetectConfig

    base = load_config(DetectConfig, cfg.detect_recipe) if cfg.detect_recipe else DetectConfig(backend="openai")
    if cfg.detector_url:
        base = replace(base, backend="openai", base_url=cfg.detector_url)
    return base


def t_interval(diffs: list[float], confidence: float) -> dict[str, float | int | None]:
    """Mean of paired differences with a Student-t interval (None bounds for fewer than two pairs)."""
    n = len(diffs)
    if n == 0:
        return {"n": 0, "mean": None, "low": None, "high": None}
    mean = sum(diffs) / n
    if n < 2:
        return {"n": n, "mean": mean, "low": None, "high": None}
    from scipy import stats

    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "low": mean - half, "high": mean + half}


def arm_metrics(images: list[dict[str, Any]]) -> dict[str, Any]:
    """Clean-image rate, defects per image and mean importance by type over one arm's detected images."""
    n = len(images)
    out: dict[str, Any] = {"images": n}
    out["clean_rate"] = sum(not im["defects"] for im in images) / n if n else None
    out["defects_per_image"] = sum(len(im["defects"]) for im in images) / n if n else None
    for label in LABELS:
        found = [d for im in images for d in im["defects"] if d["label"] == label]
        imps = [d["importance"] for d in found if d.get("importance") is not None]
        out[f"{label}_per_image"] = len(found) / n if n else None
        out[f"{label}_importance"] = sum(imps) / len(imps) if imps else None
    out["detector_format_failures"] = sum(not im["format_ok"] for im in images)
    return out


def _arm(folder: Path) -> list[dict[str, Any]]:
    """Each generated image with its prompt, seed and detected defects (images the detector rejected are left out
    and counted by the caller)."""
    manifest = {r["image_id"]: r for _, r in iter_jsonl(folder / "manifest.jsonl")}
    out = []
    for _, p in iter_jsonl(folder / "detect" / "predictions.jsonl"):
        rec = manifest.get(p["image_id"])
        if rec is None:
            continue
        out.append(
            {
                "image_id": p["image_id"],
                "prompt": rec["caption"],
                "seed": rec["seed"],
                "path": str(folder / rec["image_path"]),
                "defects": p["defects"],
                "format_ok": p["format_ok"],
            }
        )
    return out


def _per_prompt(images: list[dict[str, Any]], value) -> dict[str, float]:
    acc: dict[str, list[float]] = defaultdict(list)
    for im in images:
        acc[im["prompt"]].append(value(im))
    return {k: sum(v) / len(v) for k, v in acc.items()}


def _scores(spec: str, images: list[dict[str, Any]]) -> list[float]:
    from PIL import Image

    from train.boxflow.rewards import load_function

    fn = load_function(spec)
    pics = [Image.open(im["path"]).convert("RGB") for im in images]
    got = list(fn(pics, [im["prompt"] for im in images]))
    if len(got) != len(images):
        raise ValueError(f"scorer {spec} returned {len(got)} scores for {len(images)} images")
    return [float(x) for x in got]


def paired(base: list[dict[str, Any]], tuned: list[dict[str, Any]], cfg: LoraEvalConfig) -> dict[str, Any]:
    """Per-prompt differences (LoRA minus base, each side averaged over its seeds) with intervals."""
    measures = {
        "defects_per_image": lambda im: float(len(im["defects"])),
        "clean_rate": lambda im: float(not im["defects"]),
        **{f"{lab}_per_image": (lambda im, lab=lab: float(sum(d["label"] == lab for d in im["defects"])))
           for lab in LABELS},
    }  # fmt: skip
    for spec in cfg.scorers:
        for arm in (base, tuned):
            for im, s in zip(arm, _scores(spec, arm)):
                im[f"score:{spec}"] = s
        measures[f"score:{spec}"] = lambda im, spec=spec: im[f"score:{spec}"]
    out = {}
    for name, fn in measures.items():
        b, t = _per_prompt(base, fn), _per_prompt(tuned, fn)
        common = sorted(set(b) & set(t))
        out[name] = {
            "base": sum(b[p] for p in common) / len(common) if common else None,
            "lora": sum(t[p] for p in common) / len(common) if common else None,
            "diff": t_interval([t[p] - b[p] for p in common], cfg.confidence),
        }
    return out


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def table(result: dict[str, Any]) -> str:
    conf = int(result["config"]["confidence"] * 100)
    lines = [f"| measure | base | LoRA | LoRA - base (per prompt) | {conf}% interval |", "|---|---|---|---|---|"]
    for name, row in result["paired"].items():
        d = row["diff"]
        lines.append(f"| {name} | {_fmt(row['base'])} | {_fmt(row['lora'])} | {_fmt(d['mean'])} | "
                     f"{_fmt(d['low'])} .. {_fmt(d['high'])} |")  # fmt: skip
    for label in LABELS:
        k = f"{label}_importance"
        lines.append(f"| {k} (mean over boxes) | {_fmt(result['base'][k])} | {_fmt(result['lora'][k])} | | |")
    return "\n".join(lines)


def evaluate(prompts: str, out: Path, cfg: LoraEvalConfig) -> dict[str, Any]:
    from sdg_data.generate.runner import generate, lora_file
    from train.detector.detect import detect

    if not cfg.lora:
        raise ValueError("--lora is required: the LoRA folder or .safetensors file to compare with the base")
    lora_file(cfg.lora)  # fails early, in one line, on a bad path
    det = _detect_config(cfg)
    runs: dict[str, Any] = {}
    for arm, lora in (("base", None), ("lora", cfg.lora)):
        folder = out / arm
        runs[arm] = {"generate": generate(prompts, folder, _generate_config(cfg, lora))}
        runs[arm]["detect"] = detect(folder / "manifest.jsonl", folder / "detect", det)
    base, tuned = _arm(out / "base"), _arm(out / "lora")
    result = {
        "config": asdict(cfg),
        "prompts": prompts,
        "base": arm_metrics(base),
        "lora": arm_metrics(tuned),
        "paired": paired(base, tuned, cfg),
        "counts": {
            arm: {
                "generated": r["generate"]["images"],
                "generate_failed": r["generate"]["failed"],
                "detected": r["detect"]["predicted"],
                "detect_rejected": r["detect"]["rejected"],
            }
            for arm, r in runs.items()
        },  # fmt: skip
    }
    write_json(out / "lora_eval.json", result)
    write_text(out / "lora_eval.md", table(result) + "\n")
    return result
