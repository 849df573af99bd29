"""Average precision, the detection community's numbers, beside SDG-Eval's paper metrics.

- **COCO AP**, pycocotools' bbox evaluation on the run's columns (``backend="sdg"``, held bit for bit to
  pycocotools by the tests; the maintained evaluators themselves, faster-coco-eval and pycocotools, are the
  other backends): AP over IoU 0.50:0.95, AP50, AP75 and AP by box size, per label and overall (the mean over
  the two labels, as COCO averages categories). The predicted importance is the detection score; a box without
  importance ranks after every scored one. Boxes live on the 0-1000 grid, so each image is scored as a
  1000 x 1000 canvas and the size ranges are shares of the image, pycocotools' inclusive bands: small [0, 1%],
  medium [1%, 10%], large [10%, 100%] (a box of exactly 1% is in small and medium; COCO's pixel ranges mean nothing
  across image sizes). Equal scores rank across images in the ground truth's record order, as in pycocotools.
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

from sdg_data.boxes import GRID, box_areas, grid_array
from sdg_data.records import LABELS, Defect, ImageRecord
from sdg_data.scoring.table import ScoringTable, described_pairs, greedy_in_order


SIZES = {"small": (0.0, 0.01), "medium": (0.01, 0.1), "large": (0.1, 1.0)}  # share of the image
JOINT_IOU = (0.3, 0.5, 0.7)
JOINT_SIM = (0.5, 0.7, 0.9)


def coco_ap(
    gt: Sequence[ImageRecord],
    preds: Mapping[str, Sequence[Defect]],
    backend: str = "sdg",
    groups: Mapping[str, Sequence[int]] | None = None,
    table: ScoringTable | None = None,
) -> dict[str, Any]:
    """COCO AP per label and overall: ``{"overall"|label: {"AP", "AP50", "AP75", "AP_small", ...}}``; a value is
    None where there is nothing to score (no ground truth of that label, or of that size).

    ``backend``: ``sdg`` (pycocotools' bbox algorithm on the run's columns, below), or the maintained evaluators
    themselves, ``faster-coco-eval`` and ``pycocotools``. The tests hold the three to the same precision arrays,
    bit for bit, on random sets built to hit every tie and edge rule (score and IoU ties, boxes without
    importance, more than 100 detections in an image, areas exactly on a size boundary, groups without
    predictions). ``sdg`` is the default because at 100K images the evaluators' per-image Python layer costs
    seconds ``sdg eval`` does not have: faster-coco-eval's five runs (the set and each generator) take 8.6 s and
    850 MB at the peak; the columns take well under a second and a few tens of MB.

    ``groups`` (name -> indices into ``gt``) scores subsets and returns ``{name: {...}}``: the matching is done
    once (images do not interact) and each group accumulates its own images' detections."""
    names = list(groups) if groups is not None else ["all"]
    index = {g: np.asarray(groups[g] if groups is not None else range(len(gt)), dtype=np.int64) for g in names}
    table = table if table is not None else ScoringTable.build(gt, preds)
    if backend == "sdg":
        precision = _coco_columns(table, index)
        present = {g: set(table.gt.label[np.isin(table.gt.img, idx)].tolist()) for g, idx in index.items()}
        result = {g: _figures(precision[g], present[g]) for g in names}
    elif backend in ("faster-coco-eval", "pycocotools"):
        result = _coco_evaluator(table, index, backend)
    else:
        raise ValueError(f"COCO AP backend must be sdg, faster-coco-eval or pycocotools, got {backend!r}")
    return result if groups is not None else result["all"]


_IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)  # pycocotools' own
_REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
_MAX_DETS = 100  # COCO's AP is at 100 detections per image and category


def _area_ranges() -> list[list[float]]:
    area = GRID * GRID
    return [[0, 1e12], *([lo * area, hi * area if hi < 1 else 1e12] for lo, hi in SIZES.values())]


def _coco_columns(table: ScoringTable, groups: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """pycocotools' evaluateImg and accumulate for bboxes (no crowd boxes, maxDets 100) on the run's columns:
    the precision array [T, R, K, A, 1] of each group.

    evaluateImg, per image and label, per IoU threshold t and size range: detections in score order (stable), the
    first 100; each takes the not yet matched ground-truth box of highest IoU >= min(t, 1 - 1e-10), the last of
    equal IoUs, a box inside the size range whenever one qualifies; a detection matched to a box outside the range,
    or unmatched and itself outside it, is ignored. accumulate, per label and range: the group's detections by
    score (stable over image order, then each image's order), cumulative true and false positives over the
    detections not ignored, precision made non-increasing from the right and read at the 101 recall points (0
    past the last recall reached), -1 where the group has no ground truth inside the range."""
    ranges = _area_ranges()
    n_t, n_a = len(_IOU_THRS), len(ranges)
    gt_area = box_areas(table.gt.xy)  # the table's corners are on the integer grid already
    dt_area = box_areas(table.pred.xy)
    gt_out = np.stack([(gt_area < lo) | (gt_area > hi) for lo, hi in ranges])  # (A, G) outside the range
    dt_out = np.stack([(dt_area < lo) | (dt_area > hi) for lo, hi in ranges])  # (A, P)
    iou = table.iou
    thr = np.repeat(np.minimum(_IOU_THRS, 1 - 1e-10), n_a)[:, None, None]  # settings t * A + a

    def ok(pairs: np.ndarray) -> np.ndarray:
        return iou[pairs][None] >= thr

    prefer = np.tile(~gt_out, (n_t, 1))
    active = table.pred.rank < _MAX_DETS
    matched = greedy_in_order(table, n_t * n_a, ok, iou, tie="last", prefer=prefer, active=active)  # (T * A, P)
    hit = matched >= 0
    ignored = np.tile(dt_out, (n_t, 1))  # unmatched: ignored when outside the range
    if hit.any():  # matched: ignored when its ground-truth box is
        ignored[hit] = np.tile(gt_out, (n_t, 1))[np.nonzero(hit)[0], matched[hit]]
    tps = (hit & ~ignored).reshape(n_t, n_a, -1)
    fps = (~hit & ~ignored).reshape(n_t, n_a, -1)
    p_score = table.pred.score
    order = np.lexsort((np.arange(len(p_score)), table.pred.img, -p_score))  # score, image, the image's order
    order = order[active[order]]
    out = {}
    for name, idx in groups.items():
        member = np.zeros(table.n_images, dtype=bool)
        member[idx] = True
        g_in = member[table.gt.img]
        sel_all = order[member[table.pred.img[order]]]
        precision = -np.ones((n_t, len(_REC_THRS), len(LABELS), n_a, 1))
        for k in range(len(LABELS)):
            sel = sel_all[table.pred.label[sel_all] == k]
            g_k = g_in & (table.gt.label == k)
            for a in range(n_a):
                npig = int(np.count_nonzero(g_k & ~gt_out[a]))
                if npig == 0:
                    continue
                precision[:, :, k, a, 0] = _curve(tps[:, a, sel], fps[:, a, sel], npig)
        out[name] = precision
    return out


def _curve(tps: np.ndarray, fps: np.ndarray, npig: int) -> np.ndarray:
    """pycocotools' interpolated precision at the recall points, per threshold: (T, R)."""
    tp = np.cumsum(tps, axis=1).astype(dtype=float)
    fp = np.cumsum(fps, axis=1).astype(dtype=float)
    q = np.zeros((tps.shape[0], len(_REC_THRS)))
    nd = tps.shape[1]
    if nd == 0:
        return q
    rc = tp / npig
    pr = tp / (fp + tp + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    for t in range(tps.shape[0]):
        inds = np.searchsorted(rc[t], _REC_THRS, side="left")
        reach = inds < nd
        q[t, reach] = pr[t, inds[reach]]
    return q


def _figures(precision: np.ndarray, present: set[int]) -> dict[str, Any]:
    """The per-label and overall figures of one precision array; None for a label without ground truth."""
    keys = ["AP", "AP50", "AP75", *(f"AP_{s}" for s in SIZES)]
    out: dict[str, Any] = {}
    for name, ks in [("overall", list(range(len(LABELS)))), *((label, [k]) for k, label in enumerate(LABELS))]:
        out[name] = _summary(precision[:, :, ks], keys) if present & set(ks) else dict.fromkeys(keys)
    return out


def _coco_evaluator(table: ScoringTable, groups: Mapping[str, np.ndarray], backend: str) -> dict[str, Any]:
    """The same figures from a maintained evaluator (one run per group), for checks and for users who want the
    evaluator's own numbers."""
    # the evaluator's dictionaries, made once and shared by every run (ids are unique across the whole set;
    # the evaluator only adds an "ignore" flag it recomputes each run)
    images = [{"id": i, "width": GRID, "height": GRID} for i in range(1, table.n_images + 1)]
    g, p = table.gt, table.pred
    gt_anns = _annotations(g.img, g.label, grid_array(g.xy))
    dt_anns = _annotations(p.img, p.label, grid_array(p.xy), p.score)
    result = {}
    for name, idx in groups.items():
        member = np.zeros(table.n_images, dtype=bool)
        member[idx] = True
        result[name] = _coco_run([images[i] for i in np.flatnonzero(member).tolist()], _pick(gt_anns, member[g.img]),
                                 _pick(dt_anns, member[p.img]), backend)  # fmt: skip
    return result


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

    ranges = _area_ranges()
    cats = [{"id": k, "name": n} for k, n in enumerate(LABELS, 1)]
    if not dt_anns:  # the evaluators refuse an empty result set: what they would give is 0 where there is truth
        precision = -np.ones((len(_IOU_THRS), len(_REC_THRS), len(LABELS), len(ranges), 1))
        for ann in gt_anns:
            for a, (lo, hi) in enumerate(ranges):
                if lo <= ann["area"] <= hi:
                    precision[:, :, ann["category_id"] - 1, a, 0] = 0.0
    else:
        with contextlib.redirect_stdout(io.StringIO()):  # the evaluators print their progress
            coco_gt = COCO()
            coco_gt.dataset = {"images": images, "annotations": gt_anns, "categories": cats}
            coco_gt.createIndex()
            # one run over both labels: per label and overall are slices of its precision array. The detections
            # as the evaluator's result set, built directly (its loadRes adds polygons a box evaluation never
            # reads, at a third of this function's time)
            coco_dt = COCO()
            coco_dt.dataset = {"images": images, "annotations": dt_anns, "categories": cats}
            coco_dt.createIndex()
            ev = COCOeval(coco_gt, coco_dt, "bbox")
            ev.params.catIds = list(range(1, len(LABELS) + 1))
            ev.params.maxDets = [_MAX_DETS]  # the only cut the figures read
            ev.params.areaRng = ranges
            ev.params.areaRngLbl = ["all", *SIZES]
            ev.evaluate()
            ev.accumulate()
            precision = ev.eval["precision"]  # [T, R, K, A, M]
    return _figures(precision, {a["category_id"] - 1 for a in gt_anns})


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
    """COCO's 101-point AP of detections already sorted by score (``tp`` 1/0 each), against ``n_gt`` boxes.

    The curve of :func:`_curve` without pycocotools' epsilon in the precision's denominator (which puts a perfect
    ranking at 0.9999999999999999): joint AP has no evaluator to agree with to the last bit."""
    if n_gt == 0:
        return None
    if tp.size == 0:
        return 0.0
    ctp = np.cumsum(tp)
    recall = ctp / n_gt
    precision = ctp / np.arange(1, tp.size + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the best precision at this recall or beyond
    idx = np.searchsorted(recall, _REC_THRS, side="left")
    return float(np.where(idx < precision.size, precision[np.minimum(idx, precision.size - 1)], 0.0).mean())


def joint_ap(
    gt: Sequence[ImageRecord],
    preds: Mapping[str, Sequence[Defect]],
    pair_similarity,
    ious: Sequence[float] = JOINT_IOU,
    sims: Sequence[float] = JOINT_SIM,
    table: ScoringTable | None = None,
) -> dict[str, Any]:
    """DenseCap-style AP: a match needs IoU >= t and description similarity >= s. ``pair_similarity(a, b)`` returns
    the similarity of ``a[i]`` with ``b[i]`` for aligned lists (only pairs whose IoU reaches the lowest t are asked,
    in one batched call). ``{"overall"|label: {"mAP", "grid": {"t/s": AP}}}``.

    Within an image and label, predictions take their turn in score order (ties in the image's order); each takes
    the not yet matched ground-truth box of highest IoU (the first of equal IoUs) among those reaching t and s.
    Images do not interact, so every image and every (t, s) is matched at once on the run's columns; then one
    ranking per label over all images (score, then input order) gives the curve."""
    table = table if table is not None else ScoringTable.build(gt, preds)
    low = min(ious) - 1e-9  # pairs below the lowest IoU threshold never count
    asked = np.flatnonzero(table.iou >= low)
    sim = np.full(len(table.iou), -np.inf)
    if len(asked):
        a, b = described_pairs(table, asked)
        sim[asked] = np.asarray(pair_similarity(a, b), dtype=np.float64)
    grid = [(t, s) for t in ious for s in sims]
    t_min = np.array([t - 1e-9 for t, _ in grid])[:, None, None]
    s_min = np.array([s - 1e-9 for _, s in grid])[:, None, None]

    def ok(pairs: np.ndarray) -> np.ndarray:
        return (table.iou[pairs][None] >= t_min) & (sim[pairs][None] >= s_min)

    tp = greedy_in_order(table, len(grid), ok, table.iou, tie="first") >= 0  # (settings, predictions)
    score = table.pred.score
    per_label: dict[str, dict[str, float | None]] = {}
    for k, label in enumerate(LABELS):
        mine = np.flatnonzero(table.pred.label == k)
        order = mine[np.lexsort((mine, -score[mine]))]  # score, then input order
        n_gt = int(np.count_nonzero(table.gt.label == k))
        per_label[label] = {f"{t}/{s}": interpolated_ap(tp[x, order].astype(np.float64), n_gt)
                            for x, (t, s) in enumerate(grid)}  # fmt: skip
    out: dict[str, Any] = {}
    for label, values in per_label.items():
        vals = [v for v in values.values() if v is not None]
        out[label] = {"mAP": float(np.mean(vals)) if vals else None, "grid": values}
    both = [out[label]["mAP"] for label in LABELS if out[label]["mAP"] is not None]
    out["overall"] = {"mAP": float(np.mean(both)) if both else None}
    return out


def ap_report(
    gt: Sequence[ImageRecord],
    preds: Mapping[str, Sequence[Defect]],
    embedder=None,
    table: ScoringTable | None = None,
    backend: str = "sdg",
) -> dict[str, Any]:
    """The AP block of ``sdg eval``'s report: COCO AP overall and per generator; joint AP when there is an
    embedder."""
    table = table if table is not None else ScoringTable.build(gt, preds)
    by_gen: dict[str, list[int]] = {}
    for i, rec in enumerate(gt):
        by_gen.setdefault(rec.generator or "unknown", []).append(i)
    groups = {"": range(len(gt)), **dict(sorted(by_gen.items()))}  # "": the whole set (no generator is "")
    coco = coco_ap(gt, preds, backend=backend, groups=groups, table=table)  # matched once, accumulated per group
    out: dict[str, Any] = {"coco": coco.pop(""), "size_ranges": {k: list(v) for k, v in SIZES.items()}}
    out["coco_by_generator"] = coco
    out["coco_backend"] = backend
    if embedder is not None:
        out["joint"] = joint_ap(gt, preds, embedder.pair_cosines, table=table)  # chunked: memory stays bounded
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
