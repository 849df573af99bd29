"""How much a detector's sampled answers for one image disagree: the image's uncertainty, which
``sdg annotate push --order`` puts first in the annotators' queue.

Two answers agree as two annotators do in ``sdg annotate status``: boxes of the same label matched one to one
(Hungarian on IoU, kept at IoU >= 0.5), ``F1 = 2 * matched / (boxes_a + boxes_b)``, two clean answers agree fully
and a clean answer against boxes not at all. The uncertainty is ``1 - mean F1`` over every pair of samples: 0 when
all samples give the same boxes, 1 when no two share one.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

from sdg_data.boxes import boxes_array, iou_matrix
from sdg_data.matching import match
from sdg_data.records import LABELS, Defect


def matched_defects(a: Sequence[Defect], b: Sequence[Defect], iou: float = 0.5) -> list[tuple[str, Defect, Defect]]:
    """(label, a's defect, b's defect) for the boxes of the same label matched one to one (Hungarian on IoU) and
    kept at IoU >= ``iou``: how annotators' agreement, gold scores and samples' disagreement pair boxes."""
    out = []
    for label in LABELS:
        ga = [d for d in a if d.label == label]
        gb = [d for d in b if d.label == label]
        if ga and gb:
            m = iou_matrix(boxes_array([d.box for d in ga]), boxes_array([d.box for d in gb]))
            out += [(label, ga[r], gb[c]) for r, c in zip(*match(m, "hungarian")) if m[r, c] >= iou - 1e-9]
    return out


def box_f1(a: Sequence[Defect], b: Sequence[Defect], iou: float = 0.5) -> float:
    """Symmetric agreement of two answers (see the module docstring)."""
    if not a and not b:
        return 1.0
    return 2 * len(matched_defects(a, b, iou)) / (len(a) + len(b))


def disagreement(samples: Sequence[Sequence[Defect]], iou: float = 0.5) -> float:
    """``1 - mean pairwise box F1`` of the samples; 0.0 for fewer than two."""
    pairs = list(combinations(samples, 2))
    if not pairs:
        return 0.0
    return 1.0 - sum(box_f1(x, y, iou) for x, y in pairs) / len(pairs)
