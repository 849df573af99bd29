"""Average precision, the detection community's numbers, beside SDG-Eval's paper metrics.

- **COCO AP** with faster-coco-eval (pycocotools' algorithm in C++; a test holds it to pycocotools): AP over
  IoU 0.50:0.95, AP50, AP75 and AP by box size, per label and overall (the mean over the two labels, as COCO
  averages categories). The predicted importance is the detection score; a box without importance ranks after
  every scored one. Boxes live on the 0-1000 grid, so each image is scored as a 1000 x 1000 canvas and the size
  ranges are shares of the image: small < 1%, medium 1-10%, large >= 10% (COCO's pixel ranges mean nothing
  across image sizes).
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

from sdg_data.boxes import GRID, boxes_array, grid_array, iou_matrix
from sdg_data.records import LABELS, Defect, ImageRecord


SIZES = {"small": (0.0, 0.01), "medium": (0.01, 0.1), "large": (0.1, 1.0)}  # share of the image
JOINT_IOU = (0.3, 0.5, 0.7)
JOINT_SIM = (0.5, 0.7, 0.9)
_NO_SCORE = -1.0  # a prediction without importance: ranked after every scored one
_RECALL = np.linspace(0.0, 1.0, 101)  # COCO's 101 recall points


def _score(d: Defect) -> float:
    return float(d.importance) if d.importance is not None else _NO_SCORE


def coco_ap(
    gt: Sequence[ImageRecord],
    preds: Mapping[str, Sequence[Defect]],
    backend: str = "faster",
    groups: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """COCO AP per label and overall: ``{"overall"|label: {"AP", "AP50", "AP75", "AP_small", ...}}``; a value is
    None where there is nothing to score (no ground truth of that label, or of that size). ``backend``:
    ``faster`` (faster-coco-eval) or ``pycocotools`` (the reference, for checks).

    ``groups`` (name -> indices into ``gt``) scores subsets and returns ``{name: {...}}``: the boxes are read
    and converted once, and each group is one evaluator run over its own images. Measured at 100K images: one run
    with a category per group and label costs more (the evaluator loops over every image x category); one
    evaluation kept per image and accumulated per group saves 3 s of 9 but holds every per-image evaluation at
    once (+400 MB at the peak), so each group runs on its own."""
    names = list(groups) if groups is not None else ["all"]
    label_idx = {label: k for k, label in enumerate(LABELS)}

    def table(boxes_of) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(image index, label index, score, grid xyxy) of every box of every image, in one pass."""
        img, lab, score, boxes = [], [], [], []
        for i, rec in enumerate(gt):
            ds = boxes_of(rec)
            img += [i] * len(ds)
            lab += [label_idx[d.label] for d in ds]
            score += [_score(d) for d in ds]
            boxes += [d.box for d in ds]
        return (np.asarray(img, dtype=np.int64), np.asarray(lab, dtype=np.int64),
                np.asarray(score, dtype=np.float64), grid_array(boxes_array(boxes)))  # fmt: skip

    g_img, g_lab, _, g_box = table(lambda rec: rec.defects)
    p_img, p_lab, p_score, p_box = table(lambda rec: preds.get(rec.image_id, ()))
    # the evaluator's dictionaries, made once and shared by every run (ids are unique across the whole set;
    # the evaluator only adds an "ignore" flag it recomputes each run)
    images = [{"id": i, "width": GRID, "height": GRID} for i in range(1, len(gt) + 1)]
    gt_anns = _annotations(g_img, g_lab, g_box)
    dt_anns = _annotations(p_img, p_lab, p_box, p_score)
    result = {}
    for g in names:
        member = np.zeros(len(gt), dtype=bool)
        member[np.asarray(groups[g] if groups is not None else range(len(gt)), dtype=np.int64)] = True
        result[g] = _coco_run([images[i] for i in np.flatnonzero(member).tolist()], _pick(gt_anns, member[g_img]),
                              _pick(dt_anns, member[p_img]), backend)  # fmt: skip
    return result if groups is not None else result["all"]


def _pick(items: list, keep: np.ndarray) -> list:
    return [items[k] for k in np.flatnonzero(keep).tolist()]


def _annotations(img: np.ndarray, lab: np.ndarray, box: np.ndarray, score: np.ndarray | None = None) -> list[dict]:
    """COCO annotation dicts (ids from 1, ``bbox`` as x, y, w, h on the grid; ``score`` for detections)."""
    x0, y0, x1, y1 = (box[:, c].tolist() for c in range(4))
    cols = zip((img + 1).tolist(), (lab + 1).tolist(), x0, y0, x1, y1, strict=True)
    anns = [{"id": k, "image_id": i, "category_id": c, "iscrowd": 0, "bbox": [a, b, e - a, f - b],
             "area": float((e - a) * (f - b))} for k, (i, c, a, b, e, f) in enumerate(cols, 1)]  # fmt: skip
    if score is not None:
        for ann, s in zip(anns, score.tolist(), strict=True):
            ann["score"] = s
    return anns


def _coco_run(images: list[dict], gt_anns: list[dict], dt_anns: list[dict], backend: str) -> dict[str, Any]:
    """One evaluator run over ``images`` with the given annotations: the per-label and overall figures."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval

    keys = ["AP", "AP50", "AP75", *(f"AP_{s}" for s in SIZES)]
    cats = [{"id": k, "name": n} for k, n in enumerate(LABELS, 1)]
    with contextlib.redirect_stdout(io.StringIO()):  # the evaluators print their progress
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": gt_anns, "categories": cats}
        coco_gt.createIndex()
        if not dt_anns:
            precision = None
        else:  # one run over both labels: per label and overall are slices of its precision array
            # the detections as the evaluator's result set, built directly (its loadRes adds polygons a box
            # evaluation never reads, at a third of this function's time)
            coco_dt = COCO()
            coco_dt.dataset = {"images": images, "annotations": dt_anns, "categories": cats}
            coco_dt.createIndex()
            ev = COCOeval(coco_gt, coco_dt, "bbox")
            ev.params.catIds = list(range(1, len(LABELS) + 1))
            ev.params.maxDets = [100]  # the only cut the figures read (COCO's AP is at 100 detections)
            area = GRID * GRID
            ev.params.areaRng = [[0, 1e12], *([lo * area, hi * area if hi < 1 else 1e12] for lo, hi in SIZES.values())]
            ev.params.areaRngLbl = ["all", *SIZES]
            ev.evaluate()
            ev.accumulate()
            precision = ev.eval["precision"]  # [T, R, K, A, M]
    out: dict[str, Any] = {}
    present = {a["category_id"] - 1 for a in gt_anns}
    for name, ks in [("overall", list(range(len(LABELS)))), *((label, [k]) for k, label in enumerate(LABELS))]:
        if not present & set(ks):
            out[name] = dict.fromkeys(keys)
        elif precision is None:
            out[name] = dict.fromkeys(keys, 0.0)
        else:
            out[name] = _summary(precision[:, :, ks], keys)
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
    pair_similarity,
    ious: Sequence[float] = JOINT_IOU,
    sims: Sequence[float] = JOINT_SIM,
) -> dict[str, Any]:
    """DenseCap-style AP: a match needs IoU >= t and description similarity >= s. ``pair_similarity(a, b)`` returns
    the similarity of ``a[i]`` with ``b[i]`` for aligned lists (only pairs whose IoU reaches the lowest t are asked,
    in one batched call). ``{"overall"|label: {"mAP", "grid": {"t/s": AP}}}``.

    Matching runs per image in score order (images do not interact), then one ranking over all images gives the
    curve. Images with one ground-truth box or one prediction (nearly all) are matched with array operations."""
    per_label: dict[str, dict[str, float | None]] = {label: {} for label in LABELS}
    low = min(ious) - 1e-9  # pairs below the lowest IoU threshold never count
    for label in LABELS:
        score, img, n_gt_img, n_pred_img = [], [], [], []
        pairs = []  # (image, gt r, pred c, iou, gt text, pred text) with IoU >= the lowest threshold
        multi = []  # images with several boxes on both sides: (image, iou matrix, first prediction's index)
        for i, rec in enumerate(gt):
            g = [d for d in rec.defects if d.label == label]
            p = [d for d in preds.get(rec.image_id, ()) if d.label == label]
            n_gt_img.append(len(g))
            n_pred_img.append(len(p))
            first = len(score)
            score += [_score(d) for d in p]
            img += [i] * len(p)
            if len(g) == 1 and len(p) == 1:  # most images: one pair, no arrays
                v = g[0].box.iou(p[0].box)
                if v >= low:
                    pairs.append((i, 0, first, v, g[0].description, p[0].description))
            elif g and p:
                iou = iou_matrix(boxes_array([d.box for d in g]), boxes_array([d.box for d in p]))
                for r, c in zip(*np.nonzero(iou >= low), strict=True):
                    pairs.append((i, int(r), first + int(c), float(iou[r, c]), g[r].description, p[c].description))
                if len(g) > 1 and len(p) > 1:
                    multi.append((i, iou, first))
        n_pred, n_gt = len(score), sum(n_gt_img)
        order = np.lexsort((np.arange(n_pred), -np.asarray(score, dtype=np.float64)))  # score, then input order
        rank = np.empty(n_pred, dtype=np.int64)
        rank[order] = np.arange(n_pred)
        img_a, ngt, npred = np.asarray(img, dtype=np.int64), np.asarray(n_gt_img), np.asarray(n_pred_img)
        p_img = np.asarray([x[0] for x in pairs], dtype=np.int64)
        p_r = np.asarray([x[1] for x in pairs], dtype=np.int64)
        p_pred = np.asarray([x[2] for x in pairs], dtype=np.int64)
        p_iou = np.asarray([x[3] for x in pairs], dtype=np.float64)
        p_sim = (np.asarray(pair_similarity([x[4] for x in pairs], [x[5] for x in pairs]), dtype=np.float64)
                 if pairs else np.zeros(0))  # fmt: skip
        sim_of = {(i, r, k): v for i, r, k, v in zip(p_img.tolist(), p_r.tolist(), p_pred.tolist(), p_sim.tolist(),
                                                      strict=True)} if multi else {}  # fmt: skip
        for t in ious:
            for s in sims:
                ok = (p_iou >= t - 1e-9) & (p_sim >= s - 1e-9)
                tp = np.zeros(n_pred)
                # one ground-truth box: the best-ranked prediction that reaches it is the hit
                one_gt = ok & (ngt[p_img] == 1)
                if one_gt.any():
                    cand = p_pred[one_gt]
                    cand = cand[np.lexsort((rank[cand], img_a[cand]))]
                    _, first = np.unique(img_a[cand], return_index=True)
                    tp[cand[first]] = 1.0
                # one prediction, several ground-truth boxes: a hit when it reaches any
                one_pred = ok & (ngt[p_img] > 1) & (npred[p_img] == 1)
                tp[p_pred[one_pred]] = 1.0
                for i, iou, first in multi:  # the rest, in score order, each ground-truth box used once
                    used = np.zeros(iou.shape[0], dtype=bool)
                    for c in sorted(range(iou.shape[1]), key=lambda c: rank[first + c]):
                        good = [r for r in range(iou.shape[0]) if not used[r] and iou[r, c] >= t - 1e-9
                                and sim_of.get((i, r, first + c), -1.0) >= s - 1e-9]  # fmt: skip
                        if good:
                            used[max(good, key=lambda r: iou[r, c])] = True
                            tp[first + c] = 1.0
                per_label[label][f"{t}/{s}"] = interpolated_ap(tp[order], n_gt)
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
    by_gen: dict[str, list[int]] = {}
    for i, rec in enumerate(gt):
        by_gen.setdefault(rec.generator or "unknown", []).append(i)
    groups = {"": range(len(gt)), **dict(sorted(by_gen.items()))}  # "": the whole set (no generator is "")
    coco = coco_ap(gt, preds, groups=groups)  # one evaluator run for the whole set and each generator
    out: dict[str, Any] = {"coco": coco.pop(""), "size_ranges": {k: list(v) for k, v in SIZES.items()}}
    out["coco_by_generator"] = coco
    if embedder is not None:
        out["joint"] = joint_ap(gt, preds, embedder.pair_cosines)  # chunked: memory stays bounded
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
