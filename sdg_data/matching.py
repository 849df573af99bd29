"""One-to-one box matching shared by SDG-Eval and the GRPO reward.

Both scorers match within one image and one label at a time (class-aware); they differ only in the score
(IoU for SDG-Eval, DIoU for the reward) and in what they do with the matched pairs.
"""

from __future__ import annotations

from typing import Literal

import numpy as np


MatchMethod = Literal["hungarian", "greedy"]
MATCH_METHODS: tuple[str, ...] = ("hungarian", "greedy")
_EMPTY = np.zeros(0, dtype=np.intp)


def hungarian(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the one-to-one assignment of min(n, m) pairs with the largest total ``score``.

    Maximizing IoU is the paper's "cost 1 - IoU"; maximizing DIoU is the reward's "cost -DIoU".
    """
    n, m = score.shape
    if n == 0 or m == 0:
        return _EMPTY, _EMPTY
    if n == 1:
        return np.zeros(1, dtype=np.intp), np.array([int(np.argmax(score[0]))], dtype=np.intp)
    if m == 1:
        return np.array([int(np.argmax(score[:, 0]))], dtype=np.intp), np.zeros(1, dtype=np.intp)
    from scipy.optimize import linear_sum_assignment  # a quarter second to import: not at `sdg --help`

    return linear_sum_assignment(score, maximize=True)


def clear_assignments(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`hungarian` on many (a, b) score matrices at once, where it needs no solver: for (S, a, b) scores,
    which matrices give each row (or column, on the smaller side) one clear best partner (ahead of the next by
    more than 1e-9), all different, which is then the unique optimum; and those matrices' (rows, cols), rows
    ascending as the solver returns them. The others are left to :func:`hungarian`."""
    wide = v.shape[1] <= v.shape[2]
    w = v if wide else np.swapaxes(v, 1, 2)  # (S, small, large)
    best = np.argmax(w, axis=2)
    if w.shape[2] > 1:
        top2 = np.sort(w, axis=2)[..., -2:]
        clear = (top2[..., 1] - top2[..., 0] > 1e-9).all(axis=1)
    else:  # one on each side: the pair is the assignment
        clear = np.ones(len(w), dtype=bool)
    distinct = (np.diff(np.sort(best, axis=1), axis=1) != 0).all(axis=1)
    sure = clear & distinct
    small = np.broadcast_to(np.arange(w.shape[1]), best.shape)[sure]
    if wide:
        return sure, small, best[sure]
    rows, cols = best[sure], small
    by_row = np.argsort(rows, axis=1, kind="stable")
    return sure, np.take_along_axis(rows, by_row, axis=1), np.take_along_axis(cols, by_row, axis=1)


def greedy(score: np.ndarray, min_score: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The released evaluate.py's matching: take pairs by descending score, each box at most once.

    Pairs scoring below ``min_score`` (or zero IoU, when ``min_score`` is 0) are never taken.
    """
    n, m = score.shape
    if n == 0 or m == 0:
        return _EMPTY, _EMPTY
    flat = np.argsort(-score, axis=None, kind="stable")
    used_r = np.zeros(n, dtype=bool)
    used_c = np.zeros(m, dtype=bool)
    rows: list[int] = []
    cols: list[int] = []
    for k in flat:
        r, c = divmod(int(k), m)
        s = score[r, c]
        if s < min_score or s <= 0.0:
            break
        if used_r[r] or used_c[c]:
            continue
        used_r[r] = used_c[c] = True
        rows.append(r)
        cols.append(c)
        if len(rows) == min(n, m):
            break
    return np.array(rows, dtype=np.intp), np.array(cols, dtype=np.intp)


def match_lone(score: float, method: MatchMethod = "hungarian") -> bool:
    """Whether one box against one box is a matched pair: :func:`match` on a 1 x 1 score without the arrays
    (the Hungarian assignment always pairs them; the greedy one only above zero)."""
    if method == "hungarian":
        return True
    if method == "greedy":
        return score > 0.0
    raise ValueError(f"match method must be one of {MATCH_METHODS}, got {method!r}")


def match(score: np.ndarray, method: MatchMethod = "hungarian") -> tuple[np.ndarray, np.ndarray]:
    if method == "hungarian":
        return hungarian(score)
    if method == "greedy":
        return greedy(score)
    raise ValueError(f"match method must be one of {MATCH_METHODS}, got {method!r}")
