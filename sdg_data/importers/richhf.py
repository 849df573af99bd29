"""RichHF-18K (Liang et al., CVPR 2024) as SDG records, for the paper's Table 3 and for heatmap baselines.

RichHF-18K ships TFRecord files: per Pick-a-Pic image its ``filename``, four scores (aesthetics, artifact,
misalignment, overall), an ``artifact_map`` and a ``misalignment_map`` (encoded single-channel images) and the
prompt's token labels. They are read with the small ``tfrecord`` package (no TensorFlow) and joined to the
Pick-a-Pic images the user has, by file name; the caption comes from ``--captions`` (JSONL / CSV with ``filename``
and ``caption``) or a ``NAME.txt`` beside the image.

Each heatmap becomes boxes through :func:`sdg_data.boxes.boxes_from_heatmap` (threshold, 8-connected regions, one
box each, importance from the region's peak), and its peak is kept in provenance, so the image-level metric can use
the paper's own rule (ground truth present when the map's maximum exceeds 0.33). The maps themselves are written as
PNGs beside the records for the heatmap baselines. An image that cannot be joined or read goes to the rejects.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdg_data.boxes import boxes_from_heatmap
from sdg_data.config import Fraction, Positive
from sdg_data.jsonl import write_bytes
from sdg_data.records import Defect, ImageRecord
from sdg_data.report import StageReport


MAPS = {"artifact": "artifact_map", "misalignment": "misalignment_map"}
SCORES = ("aesthetics_score", "artifact_score", "misalignment_score", "overall_score")
PAPER_THRESHOLD = 0.33  # the authors' code: a heatmap whose maximum exceeds this marks the type present


@dataclass
class RichHFConfig:
    images: str | None = None  # folder of the Pick-a-Pic images, named as RichHF's `filename`
    captions: str | None = None  # JSONL or CSV with `filename` and `caption`; else NAME.txt beside each image
    threshold: Fraction = PAPER_THRESHOLD  # heatmap value (0-1) above which a pixel is marked
    min_pixels: Positive = 16  # marked regions smaller than this many heatmap pixels are not boxes
    split: str | None = None  # the split recorded in every record (RichHF's train / dev / test file)
    write_heatmaps: bool = True  # write each map as OUT.heatmaps/<id>.<type>.png (for heatmap baselines)

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")


def read_tfrecord(path: str | Path):
    """The examples of a RichHF-18K TFRecord file as dicts (maps decoded to float arrays in [0, 1])."""
    try:
        from tfrecord import tfrecord_loader
    except ImportError as exc:
        raise ImportError(f"{exc}; install the interop extra: pip install 'sdg[interop]'") from None
    spec = {"filename": "byte", MAPS["artifact"]: "byte", MAPS["misalignment"]: "byte",
            "prompt_misalignment_label": "byte", **{s: "float" for s in SCORES}}  # fmt: skip
    yield from enumerate(tfrecord_loader(str(path), None, spec), 1)


def _decode_map(data: Any) -> np.ndarray:
    from PIL import Image

    raw = bytes(np.asarray(data, dtype=np.uint8)) if not isinstance(data, (bytes, bytearray)) else bytes(data)
    with Image.open(io.BytesIO(raw)) as im:
        return np.asarray(im.convert("L"), dtype=np.float32) / 255.0


def _text(value: Any) -> str:
    if value is None:
        return ""
    raw = value if isinstance(value, (bytes, bytearray)) else bytes(np.asarray(value, dtype=np.uint8))
    return raw.decode("utf-8", errors="replace")


def _captions(cfg: RichHFConfig) -> dict[str, str]:
    if not cfg.captions:
        return {}
    p = Path(cfg.captions)
    if p.suffix == ".csv":
        with p.open(encoding="utf-8", newline="") as f:
            return {r["filename"]: r["caption"] for r in csv.DictReader(f) if r.get("filename")}
    from sdg_data.jsonl import iter_jsonl

    return {o["filename"]: o["caption"] for _, o in iter_jsonl(p) if isinstance(o, dict) and "filename" in o}


def import_richhf(tfrecord: str | Path, out: str | Path, cfg: RichHFConfig) -> dict[str, Any]:
    """Write ``out`` (records), its rejects and summary (and the heatmap PNGs); returns the summary."""
    from PIL import Image

    from sdg_data.images import ImageError, load_image
    from sdg_data.jsonl import write_jsonl
    from sdg_data.paths import Resolver

    out = Path(out)
    if not cfg.images:
        raise ValueError("--images is required: the folder of the Pick-a-Pic images RichHF-18K's file names name")
    root = Path(cfg.images)
    resolver = Resolver(root)
    captions = _captions(cfg)
    maps_dir = out.with_name(out.stem + ".heatmaps")
    report = StageReport("import")
    rows = []
    for n, ex in read_tfrecord(tfrecord):
        report.read += 1
        name = _text(ex.get("filename"))
        iid = Path(name).stem or f"richhf-{n}"
        try:
            img = load_image(name, resolver)
            caption = captions.get(name)
            side = (root / name).with_suffix(".txt")
            if caption is None and side.is_file():
                caption = side.read_text(encoding="utf-8").strip()
            if not caption:
                raise ValueError(f"no caption for {name} (give --captions or put {side.name} beside the image)")
            maps = {t: _decode_map(ex[key]) for t, key in MAPS.items()}
        except (ImageError, ValueError, OSError, KeyError) as exc:
            report.reject(f"record {iid!r}: {exc}", iid, f"{tfrecord}#{n}", None)
            continue
        defects, peaks, paths = [], {}, {}
        for label, heat in maps.items():
            peaks[label] = round(float(heat.max()), 4)
            for box, peak in boxes_from_heatmap(heat, cfg.threshold, cfg.min_pixels):
                desc = f"region marked by RichHF-18K raters on the {label} heatmap (peak {peak:.2f})"
                defects.append(Defect(box, label, desc, max(1, min(100, round(peak * 100)))))
            if cfg.write_heatmaps:
                maps_dir.mkdir(parents=True, exist_ok=True)
                dest = maps_dir / f"{iid}.{label}.png"
                buf = io.BytesIO()
                Image.fromarray((heat * 255).round().astype("uint8")).save(buf, format="PNG")
                write_bytes(dest, buf.getvalue())  # a temp file renamed over the name: a planted link is replaced
                paths[label] = str(dest.relative_to(out.parent))
        scores = {s: round(float(np.asarray(ex[s]).reshape(-1)[0]), 4) for s in SCORES if ex.get(s) is not None}
        prov = {"source": "richhf-18k", "filename": name, "scores": scores, "heatmap_peaks": peaks,
                "threshold": cfg.threshold, "prompt_misalignment_label": _text(ex.get("prompt_misalignment_label")),
                "heatmaps": paths}  # fmt: skip
        rel = os.path.relpath(img.path, out.parent)
        rec = ImageRecord(image_id=iid, defects=defects, image_path=rel, width=img.width, height=img.height,
                          caption=caption, split=cfg.split, provenance=prov)  # fmt: skip
        rows.append(rec.to_json())
        report.kept += 1
    write_jsonl(out, rows)
    report.extras = {"defects": sum(len(r["defects"]) for r in rows), "threshold": cfg.threshold}
    return report.write(out.parent, prefix=f"{out.stem}.")


@dataclass
class ImageLevelConfig:
    threshold: Fraction = PAPER_THRESHOLD  # ground truth present when the heatmap maximum exceeds this (0-1)
    box_order: str = "xyxy"  # how the predictions write box_2d: xyxy or yxyx

    def __post_init__(self) -> None:
        if self.box_order not in ("xyxy", "yxyx"):
            raise ValueError(f"box_order must be xyxy or yxyx, got {self.box_order!r}")


def image_level(gt: list[ImageRecord], preds: dict[str, list[Defect]], threshold: float = PAPER_THRESHOLD):
    """Table 3's image-level precision / recall / F1 per type. Ground truth: the type is present when the record's
    heatmap peak (provenance, from RichHF) exceeds ``threshold``, or, for records without peaks, when it has a box
    of the type. Prediction: present when the detector gives a box of the type. Images without a prediction count
    as predicting nothing."""
    out: dict[str, Any] = {}
    for label in MAPS:
        tp = fp = fn = tn = 0
        for r in gt:
            peaks = (r.provenance or {}).get("heatmap_peaks") or {}
            truth = peaks[label] > threshold if label in peaks else any(d.label == label for d in r.defects)
            said = any(d.label == label for d in preds.get(r.image_id, []))
            tp += truth and said
            fp += said and not truth
            fn += truth and not said
            tn += not truth and not said
        p = tp / (tp + fp) if tp + fp else 0.0
        rc = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * p * rc / (p + rc) if p + rc else 0.0
        out[label] = {"precision": p, "recall": rc, "f1": f1, "tp": tp, "fp": fp, "fn": fn, "tn": tn}
    out["images"] = len(gt)
    out["threshold"] = threshold
    return out


# Table 3 of the SDG paper (RichHF-18K, image level, precision / recall / F1), printed beside a run for reference.
PAPER_TABLE3 = {
    "ImageDoctor @0.10": ((0.965, 0.939, 0.952), (0.983, 0.143, 0.250)),
    "ImageDoctor @0.33": ((0.977, 0.762, 0.856), (1.000, 0.004, 0.007)),
    "SDG (paper)": ((0.970, 0.698, 0.812), (0.951, 0.500, 0.655)),
}


def format_table3(result: dict[str, Any], name: str = "this run") -> str:
    def cell(v) -> str:
        return " / ".join(f"{x:.3f}" for x in v)

    lines = ["| method | artifact P / R / F1 | misalignment P / R / F1 |", "|---|---|---|"]
    for method, (art, mis) in PAPER_TABLE3.items():
        lines.append(f"| {method} | {cell(art)} | {cell(mis)} |")
    mine = [(result[t]["precision"], result[t]["recall"], result[t]["f1"]) for t in MAPS]
    lines.append(f"| **{name}** ({result['images']} images, GT at heatmap max > {result['threshold']}) | "
                 f"{cell(mine[0])} | {cell(mine[1])} |")  # fmt: skip
    return "\n".join(lines)


def write_image_level(gt_path, pred_path, out_path, threshold: float, box_order: str = "xyxy") -> dict[str, Any]:
    """``sdg eval-image-level``: read records and predictions (as ``sdg eval`` does), score, write JSON."""
    from sdg_data.evaluation import EvalConfig, index_predictions
    from sdg_data.jsonl import iter_jsonl, load_records, write_json

    gt = load_records(gt_path)
    if not gt:
        raise ValueError(f"{gt_path}: no ground-truth records; nothing to score")
    preds, stats = index_predictions(iter_jsonl(pred_path), EvalConfig(embedder="none", box_order=box_order),
                                     source=str(pred_path))  # fmt: skip
    result = image_level(gt, preds, threshold)
    result["predictions"] = {**stats, "missing": sum(r.image_id not in preds for r in gt)}
    if out_path:
        write_json(out_path, result)
    return result
