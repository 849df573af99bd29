"""Image-level detection (the SDG paper's Table 3 on RichHF-18K): is a defect type present in the image at all.

Ground truth comes from RichHF's heatmap peaks, kept in a record's provenance by ``sdg import richhf`` (the type
is present when the peak exceeds the paper's 0.33), or from the boxes of any other record; a prediction says a type
is present when the detector boxes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sdg_data.config import Fraction
from sdg_data.records import LABELS, Defect, ImageRecord


PAPER_THRESHOLD = 0.33  # the authors' code: a heatmap whose maximum exceeds this marks the type present


@dataclass
class ImageLevelConfig:
    threshold: Fraction = field(
        default=PAPER_THRESHOLD, metadata={"help": "ground truth present when the heatmap maximum exceeds this (0-1)"}
    )
    box_order: str = field(default="xyxy", metadata={"help": "how the predictions write box_2d: xyxy or yxyx"})

    def __post_init__(self) -> None:
        if self.box_order not in ("xyxy", "yxyx"):
            raise ValueError(f"box_order must be xyxy or yxyx, got {self.box_order!r}")


def heatmap_peaks(rec: ImageRecord) -> dict[str, float]:
    """A record's ``provenance.heatmap_peaks`` (label -> the heatmap's maximum), checked: an object whose keys are
    labels and whose values are finite numbers; ValueError naming the record and the field otherwise (a string
    "0.9" or ``true`` would be misread, a list would crash)."""
    import math

    peaks = (rec.provenance or {}).get("heatmap_peaks")
    if peaks is None:
        return {}
    where = f"record {rec.image_id!r} field 'provenance.heatmap_peaks'"
    if not isinstance(peaks, dict):
        raise ValueError(f"{where}: must be an object of label -> peak, got {type(peaks).__name__}")
    for k, v in peaks.items():
        if k not in LABELS:
            raise ValueError(f"{where}: key {k!r} is not one of {list(LABELS)}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{where}.{k}: must be a finite number, got {v!r}"[:300])
    return peaks


def image_level(gt: list[ImageRecord], preds: dict[str, list[Defect]], threshold: float = PAPER_THRESHOLD):
    """Table 3's image-level precision / recall / F1 per type. Ground truth: the type is present when the record's
    heatmap peak (provenance, from RichHF) exceeds ``threshold``, or, for records without peaks, when it has a box
    of the type. Prediction: present when the detector gives a box of the type. Images without a prediction count
    as predicting nothing."""
    out: dict[str, Any] = {}
    for label in LABELS:
        tp = fp = fn = tn = 0
        for r in gt:
            peaks = heatmap_peaks(r)
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
    mine = [(result[t]["precision"], result[t]["recall"], result[t]["f1"]) for t in LABELS]
    lines.append(f"| **{name}** ({result['images']} images, GT at heatmap max > {result['threshold']}) | "
                 f"{cell(mine[0])} | {cell(mine[1])} |")  # fmt: skip
    return "\n".join(lines)


def write_image_level(gt_path, pred_path, out_path, threshold: float, box_order: str = "xyxy") -> dict[str, Any]:
    """``sdg eval-image-level``: read records and predictions (as ``sdg eval`` does), score, write JSON."""
    from sdg_data.io.files import write_json
    from sdg_data.io.jsonl import iter_jsonl
    from sdg_data.io.truth import load_ground_truth
    from sdg_data.scoring.evaluation import EvalConfig, index_predictions, require_shared_ids

    truth = load_ground_truth(gt_path, stage="eval-image-level")
    gt = truth.records
    for rec in gt:
        heatmap_peaks(rec)  # every record checked before a figure is made
    preds, stats = index_predictions(iter_jsonl(pred_path), EvalConfig(embedder="none", box_order=box_order),
                                     source=str(pred_path))  # fmt: skip
    require_shared_ids(gt, preds, stats, pred_path)
    result = image_level(gt, preds, threshold)
    result["predictions"] = {**stats, "missing": stats["missing_predictions"]}
    result["ground_truth"] = truth.source
    if out_path:
        write_json(out_path, result)
    return result
