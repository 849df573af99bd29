"""The boxes of one scoring run as columns, walked out of the records once.

SDG-Eval, COCO AP and joint AP all compare, per image and label (a *slot*), every ground-truth box with every
prediction. Held as columns (each box's image, label, coordinates, importance, description) and one pair table
(every ground-truth x prediction pair of a slot, with its IoU), the scorers work on whole arrays: at 100K images
no scorer loops over images in Python, and the IoUs are computed once for all of them.

Order is kept: boxes sit in record order (image by image, each image's defects as listed), slots in image then
label order, and a slot's pairs row-major (ground truth x prediction), as ``iou_matrix`` lays them out. Every tie
rule of the scorers (stable score order, first or last best) is stated against that order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain

import numpy as np

from sdg_data.boxes import iou_rows, scored_corners
from sdg_data.records import LABELS, Defect, ImageRecord


NO_SCORE = -1.0  # a box without importance ranks after every scored one (importance is 1-100)
MAX_BOXES = 300  # boxes per image a score takes by default: matching is quadratic in them
MAX_PAIRS = 5_000_000  # same-image-and-type box pairs a run scores at most by default (~200 bytes each, ~1 GB)


@dataclass
class Boxes:
    """One side's boxes in record order."""

    img: np.ndarray  # image index (into the ground truth), int64
    label: np.ndarray  # index into LABELS, int64
    xy: np.ndarray  # (n, 4) float64, xyxy on the integer 0-1000 grid (``scored_corners``): what every score reads
    importance: np.ndarray  # float64, NaN where a box has none
    desc: list[str]
    start: np.ndarray  # per slot: where its boxes begin in ``order``
    count: np.ndarray  # per slot: how many boxes
    order: np.ndarray  # box indices sorted by slot (record order within a slot)

    @classmethod
    def of(cls, lists: Sequence[Sequence[Defect]], n_slots: int) -> Boxes:
        label_idx = {label: k for k, label in enumerate(LABELS)}
        img = np.repeat(np.arange(len(lists), dtype=np.int64), [len(ds) for ds in lists])
        flat = [d for ds in lists for d in ds]
        n = len(flat)
        label = np.fromiter(map(label_idx.__getitem__, [d.label for d in flat]), dtype=np.int64, count=n)
        xy = np.fromiter(chain.from_iterable([d.box for d in flat]), dtype=np.float64, count=4 * n).reshape(n, 4)
        xy = scored_corners(xy)  # one reading of the boxes for SDG-Eval, COCO AP and joint AP
        imp = np.array([d.importance for d in flat], dtype=np.float64)  # None -> NaN
        slot = img * len(LABELS) + label
        count = np.bincount(slot, minlength=n_slots).astype(np.int64)
        start = np.concatenate(([0], np.cumsum(count)[:-1])).astype(np.int64)
        order = np.argsort(slot, kind="stable")
        return cls(img, label, xy, imp, [d.description for d in flat], start, count, order)

    @property
    def slot(self) -> np.ndarray:
        return self.img * len(LABELS) + self.label

    @cached_property
    def score(self) -> np.ndarray:
        """The ranking score of each box: its importance, or ``NO_SCORE``."""
        return np.where(np.isnan(self.importance), NO_SCORE, self.importance)

    @cached_property
    def rank(self) -> np.ndarray:
        """Each box's place in its slot by score, highest first, ties in record order (a stable sort)."""
        by = np.lexsort((np.arange(len(self.img)), -self.score, self.slot))  # slot, then score, then record order
        rank = np.empty(len(self.img), dtype=np.int64)
        rank[by] = np.arange(len(self.img)) - np.repeat(self.start, self.count)
        return rank


@dataclass
class ScoringTable:
    """Ground truth and predictions of one run, and every same-slot pair with its IoU."""

    n_images: int
    gt: Boxes
    pred: Boxes
    pair_g: np.ndarray  # ground-truth box of each pair
    pair_p: np.ndarray  # prediction of each pair
    pair_start: np.ndarray  # per slot: its first pair (slots with both sides hold n_g * n_p pairs)
    iou: np.ndarray  # IoU of each pair, float64, on the integer grid corners every score reads

    @classmethod
    def build(cls, gt: Sequence[ImageRecord], preds: Mapping[str, Sequence[Defect]]) -> ScoringTable:
        n_slots = len(gt) * len(LABELS)
        g = Boxes.of([rec.defects for rec in gt], n_slots)
        p = Boxes.of([preds.get(rec.image_id, ()) for rec in gt], n_slots)
        per_slot = g.count * p.count
        pair_start = np.concatenate(([0], np.cumsum(per_slot)[:-1])).astype(np.int64)
        slot = np.repeat(np.arange(n_slots, dtype=np.int64), per_slot)
        k = np.arange(len(slot), dtype=np.int64) - pair_start[slot]  # index within the slot's n_g x n_p block
        n_p = p.count[slot]
        pair_g = g.order[g.start[slot] + k // np.maximum(n_p, 1)]
        pair_p = p.order[p.start[slot] + k % np.maximum(n_p, 1)]
        return cls(len(gt), g, p, pair_g, pair_p, pair_start, iou_rows(g.xy[pair_g], p.xy[pair_p]))

    @property
    def n_slots(self) -> int:
        return self.n_images * len(LABELS)

    @cached_property
    def pair_slot(self) -> np.ndarray:
        return self.gt.slot[self.pair_g]

    def buckets(self) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        """Slots with boxes on both sides, grouped by shape: ``(n_g, n_p, slots, pairs)`` with ``pairs`` an
        ``(S, n_g, n_p)`` array of pair indices (row-major, record order on both sides)."""
        ng, npd = self.gt.count, self.pred.count
        both = np.flatnonzero((ng > 0) & (npd > 0))
        if not len(both):
            return
        wide = int(npd[both].max()) + 1
        shapes = ng[both] * wide + npd[both]
        for shape in np.unique(shapes).tolist():
            sl = both[shapes == shape]
            a, b = divmod(shape, wide)
            yield a, b, sl, (self.pair_start[sl][:, None] + np.arange(a * b)).reshape(len(sl), a, b)


def greedy_in_order(
    table: ScoringTable,
    n_settings: int,
    ok: Callable[[np.ndarray], np.ndarray],
    value: np.ndarray,
    tie: str,
    prefer: np.ndarray | None = None,
    active: np.ndarray | None = None,
) -> np.ndarray:
    """The detection community's greedy matching, for ``n_settings`` settings at once.

    In each slot, the predictions take their turn by ``table.pred.rank`` (score order); each takes, among the
    ground-truth boxes not yet taken in that setting whose pair is ``ok`` there, the one of highest ``value``
    (``tie``: ``"first"`` or ``"last"`` of equal values in record order). With ``prefer`` (settings x ground-truth
    boxes), a preferred box is taken whenever one qualifies (COCO's regular boxes before ignored ones).
    ``ok(pairs)`` gives, for an array of pair indices, whether each pair may match in each setting (settings
    first): asked one prediction's pairs at a time, so no settings x pairs array is ever held. ``active``
    (predictions) skips the predictions that do not take part.

    Returns (settings x predictions), int32: the ground-truth box each prediction took, or -1.
    """
    out = np.full((n_settings, len(table.pred.img)), -1, dtype=np.int32)
    rank = table.pred.rank
    for n_g, n_p, sl, pairs in table.buckets():
        g_idx = table.pair_g[pairs[:, :, 0]]  # (S, n_g) ground-truth boxes
        p_idx = table.pair_p[pairs[:, 0, :]]  # (S, n_p) predictions, record order
        turn = np.argsort(rank[p_idx], axis=1, kind="stable")  # column taken at each step
        used = np.zeros((n_settings, len(sl), n_g), dtype=bool)
        rows = np.arange(len(sl))
        pref = prefer[:, g_idx] if prefer is not None else None  # (settings, S, n_g)
        for step in range(n_p):
            col = turn[:, step]
            pr = pairs[rows, :, col]  # (S, n_g) this prediction's pairs
            pi = p_idx[rows, col]
            free = ok(pr) & ~used
            if active is not None:
                free &= active[pi][None, :, None]
            val = np.broadcast_to(value[pr], free.shape)
            pick, has = _best(free & pref if pref is not None else free, val, tie)
            if pref is not None:
                pick2, has2 = _best(free & ~pref, val, tie)
                pick = np.where(has, pick, pick2)
                has |= has2
            hit_set, hit_s = np.nonzero(has)
            used[hit_set, hit_s, pick[hit_set, hit_s]] = True
            out[hit_set, pi[hit_s]] = g_idx[hit_s, pick[hit_set, hit_s]]
    return out


def _best(cand: np.ndarray, val: np.ndarray, tie: str) -> tuple[np.ndarray, np.ndarray]:
    """Index of the highest ``val`` among ``cand`` along the last axis (first or last of ties) and whether any."""
    masked = np.where(cand, val, -np.inf)
    if tie == "first":
        pick = np.argmax(masked, axis=-1)
    else:
        pick = masked.shape[-1] - 1 - np.argmax(masked[..., ::-1], axis=-1)
    return pick, cand.any(axis=-1)


def described_pairs(table: ScoringTable, pairs: np.ndarray) -> tuple[list[str], list[str]]:
    """The ground-truth and predicted descriptions of the given pairs, aligned."""
    gd, pd = table.gt.desc, table.pred.desc
    return [gd[k] for k in table.pair_g[pairs].tolist()], [pd[k] for k in table.pair_p[pairs].tolist()]
