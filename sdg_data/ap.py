"""Average precision, the detection community's numbers, beside SDG-Eval's paper metrics.

- **COCO AP** with pycocotools (the reference implementation): AP over IoU 0.50:0.95, AP50, AP75, and AP by box
  size, per label and overall (the mean over the two labels, as COCO averages categories). The predicted
  importance is the detection score; a box without importance ranks after every scored one. Boxes live on the
  0-1000 grid, so each image is scored as a 1000 x 1000 canvas and the size ranges are shares of the image:
  small < 1%, medium 1-10%, large >= 10% (COCO's pixel ranges mean nothing across image sizes).
- **Joint AP** in the DenseCap manner: a prediction is a true positive when an unmatched ground-truth box of its
  label has IoU >= t *and* description similarity >= s (cosine of the embedder's vectors); AP per (t, s) on the
  same 101-point interpolation, and its mean over the grid.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sdg_data.boxes import GRID, boxes_array, iou_matrix
from sdg_data.records import LABELS, Defect, ImageRecord


SIZES = {"small": (0.0, 0.01), "medium": (0.01, 0.1), "large": (0.1, 1.0)}  # share of the image
JOINT_IOU = (0.3, 0.5, 0.7)
JOINT_SIM = (0.5, 0.7, 0.9)
_NO_SCORE = -1.0  # a prediction without importance: ranked after every scored one
_RECALL = np.linspace(0.0, 1.0, 101)  # COCO's 101 recall points


def _score(d: Defect) -> float:
    return float(d.importance) if d.importance is not None else _NO_SCORE


def coco_ap(gt: Sequence[ImageRecord], preds: Mapping[str, Sequence[Defect]]) -> dict[str, Any]:
    """COCO AP per label and overall: ``{"overall"|label: {"AP", "AP50", "AP75", "AP_small", ...}}``; a value is
    None where there is nothing to score (no ground truth of that label, or of that size)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cat = {label: k for k, label in enumerate(LABELS, 1)}
    images, anns, dets = [], [], []
    for k, rec in enumerate(gt, 1):
        images.append({"id": k, "width": GRID, "height": GRID})
        for d in rec.defects:
            x0, y0, x1, y1 = d.box.to_grid()
            anns.append({"id": len(anns) + 1, "image_id": k, "category_id": cat[d.label], "iscrowd": 0,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0))})  # fmt: skip
        for d in preds.get(rec.image_id, ()):
            x0, y0, x1, y1 = d.box.to_grid()
            dets.append({"image_id": k, "category_id": cat[d.label], "bbox": [x0, y0, x1 - x0, y1 - y0],
                         "score": _score(d)})  # fmt: skip
    data = {"images": images, "annotations": anns, "categories": [{"id": v, "name": n} for n, v in cat.items()]}
    keys = ["AP", "AP50", "AP75", *(f"AP_{s}" for s in SIZES)]
    empty = {k: None for k in keys}
    out: dict[str, Any] = {}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_gt = COCO()
        coco_gt.dataset = data
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets) if dets else None
        for name, cats in [("overall", list(cat.values())), *((label, [cat[label]]) for label in LABELS)]:
            if not any(a["category_id"] in cats for a in anns):
                out[name] = dict(empty)
                continue
            if coco_dt is None:
                out[name] = {k: 0.0 for k in keys}
                continue
            ev = COCOeval(coco_gt, coco_dt, "bbox")
            ev.params.catIds = cats
            ev.params.maxDets = [1, 10, 100]
            area = GRID * GRID
            ev.params.areaRng = [[0, 1e12], *([lo * area, hi * area if hi < 1 else 1e12] for lo, hi in SIZES.values())]
            ev.params.areaRngLbl = ["all", *SIZES]
            ev.evaluate()
            ev.accumulate()
            out[name] = _summary(ev.eval["precision"], keys)
    return out


def _summary(precision: np.ndarray, keys: list[str]) -> dict[str, float | None]:
    """AP figures from pycocotools' precision array [T, R, K, A, M] (maxDets 100): the mean over the entries it
    filled (-1 marks a category or size with no ground truth)."""

    def mean(p: np.ndarray) -> float | None:
        p = p[p > -1]
        return float(p.mean()) if p.size else None

    pr = precision[..., -1]  # maxDets = 100
    vals = [mean(pr[:, :, :, 0]), mean(pr[0, :, :, 0]), mean(pr[5, :, :, 0])]
    vals += [mean(pr[:, :, :, a]) for a in range(1, len(SIZES) + 1)]
    return dict(zip(keys, vals, strict=True))


def interpolated_ap(tp: np.ndarray, n_gt: int) -> float | None:
    """COCO's 101-point AP of detections already sorted by score (``tp`` 1/0 each), against ``n_gt`` boxes."""
    if n_gt == 0:
        return None
    if tp.size == 0:
        return 0.0
    ctp = np.cumsum(tp)
    recall = ctp / n_gt
    precision = ctp / np.arange(1, tp.size + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the best precision at this recall or beyond
    idx = np.searchsorted(recall, _RECALL, side="left")
    return float(np.where(idx < precision.size, precision[np.minimum(idx, precision.size - 1)], 0.0).mean())


def joint_ap(
    gt: Sequence[ImageRecord],
    preds: Mapping[str, Sequence[Defect]],
    similarity,
    ious: Sequence[float] = JOINT_IOU,
    sims: Sequence[float] = JOINT_SIM,
) -> dict[str, Any]:
    """DenseCap-style AP: a match needs IoU >= t and description similarity >= s. ``similarity(gt_texts,
    pred_texts)`` returns their pairwise cosine matrix. ``{"overall"|label: {"mAP", "grid": {"t/s": AP}}}``."""
    per_label: dict[str, dict[str, float | None]] = {label: {} for label in LABELS}
    for label in LABELS:
        items = []  # (score, image index, pred index) over every image
        gts, iou_of, sim_of = [], [], []
        for i, rec in enumerate(gt):
            g = [d for d in rec.defects if d.label == label]
            p = [d for d in preds.get(rec.image_id, ()) if d.label == label]
            gts.append(len(g))
            if g and p:
                iou_of.append(iou_matrix(boxes_array([d.box for d in g]), boxes_array([d.box for d in p])))
                sim_of.append(np.asarray(similarity([d.description for d in g], [d.description for d in p])))
            else:
                iou_of.append(np.zeros((len(g), len(p))))
                sim_of.append(np.zeros((len(g), len(p))))
            items += [(_score(d), i, j) for j, d in enumerate(p)]
        items.sort(key=lambda x: (-x[0], x[1], x[2]))  # stable: score, then image and box order
        n_gt = sum(gts)
        for t in ious:
            for s in sims:
                used = [np.zeros(n, dtype=bool) for n in gts]
                tp = np.zeros(len(items))
                for k, (_, i, j) in enumerate(items):
                    if not gts[i]:
                        continue
                    ok = (iou_of[i][:, j] >= t - 1e-9) & (sim_of[i][:, j] >= s - 1e-9) & ~used[i]
                    if ok.any():
                        best = int(np.argmax(np.where(ok, iou_of[i][:, j], -1.0)))
                        used[i][best] = True
                        tp[k] = 1.0
                per_label[label][f"{t}/{s}"] = interpolated_ap(tp, n_gt)
    out: dict[str, Any] = {}
    for label, grid in per_label.items():
        vals = [v for v in grid.values() if v is not None]
        out[label] = {"mAP": float(np.mean(vals)) if vals else None, "grid": grid}
    both = [out[label]["mAP"] for label in LABELS if out[label]["mAP"] is not None]
    out["overall"] = {"mAP": float(np.mean(both)) if both else None}
    return out


def ap_report(gt: Sequence[ImageRecord], preds: Mapping[str, Sequence[Defect]], embedder=None) -> dict[str, Any]:
    """The AP block of ``sdg eval``'s report: COCO AP overall and per generator; joint AP when there is an
    embedder."""
    by_gen: dict[str, list[ImageRecord]] = {}
    for rec in gt:
        by_gen.setdefault(rec.generator or "unknown", []).append(rec)
    out: dict[str, Any] = {"coco": coco_ap(gt, preds), "size_ranges": {k: list(v) for k, v in SIZES.items()}}
    out["coco_by_generator"] = {gen: coco_ap(recs, preds) for gen, recs in sorted(by_gen.items())}
    if embedder is not None:
        texts = [d.description for r in gt for d in r.defects]
        texts += [d.description for r in gt for d in preds.get(r.image_id, ())]
        embedder.encode(texts)  # one batched pass; the per-image lookups below hit the cache
        out["joint"] = joint_ap(gt, preds, embedder.cosine_matrix)
    return out


def format_ap(block: Mapping[str, Any]) -> str:
    """COCO AP (and joint AP) as a small table beside the paper's."""

    def f(v) -> str:
        return f"{v:8.3f}" if v is not None else f"{'-':>8}"

    keys = ["AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large"]
    lines = [f"{'COCO AP (score: importance)':<28}" + "".join(f"{k:>10}" for k in keys)]
    rows = [(name, block["coco"][name]) for name in ("overall", *LABELS)]
    rows += [(f"  {gen}", b["overall"]) for gen, b in block.get("coco_by_generator", {}).items()]
    for name, vals in rows:
        lines.append(f"{name:<28}" + "".join(f"  {f(vals[k])}" for k in keys))
    joint = block.get("joint")
    if joint:
        lines.append(
            f"joint box + description mAP (DenseCap style, over IoU {list(JOINT_IOU)} x similarity "
            f"{list(JOINT_SIM)}): overall {f(joint['overall']['mAP']).strip()}, "
            + ", ".join(f"{label} {f(joint[label]['mAP']).strip()}" for label in LABELS)
        )
    return "\n".join(lines)
