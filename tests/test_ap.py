"""COCO AP through pycocotools and the DenseCap-style joint AP, against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from sdg_data.ap import coco_ap, interpolated_ap, joint_ap
from sdg_data.boxes import Box
from sdg_data.records import Defect, ImageRecord


def _d(box, imp, label="artifact", desc="a melted hand"):
    return Defect(Box(*box), label, desc, imp)


def _gt():
    return [ImageRecord(image_id="i1", defects=[_d((0, 0, 50, 50), 50)]),
            ImageRecord(image_id="i2", defects=[_d((500, 500, 700, 700), 50)])]  # fmt: skip


def test_coco_ap_by_hand():
    """p1 (score 90) hits i1's box, p2 (80) is a false alarm on i1, p3 (70) hits i2's box. Precision after each:
    1, 1/2, 2/3 at recall 1/2, 1/2, 1; interpolated: 1 up to recall 0.5 (51 of COCO's 101 points), 2/3 after
    (50 points): AP = (51 + 50 * 2/3) / 101 at every IoU threshold (the hits are exact)."""
    preds = {"i1": [_d((0, 0, 50, 50), 90), _d((800, 800, 900, 900), 80)], "i2": [_d((500, 500, 700, 700), 70)]}
    got = coco_ap(_gt(), preds)
    want = (51 + 50 * 2 / 3) / 101
    for k in ("AP", "AP50", "AP75"):
        assert got["artifact"][k] == pytest.approx(want, abs=1e-9) and got["overall"][k] == pytest.approx(want)
    assert got["misalignment"]["AP"] is None  # no ground truth of that label: nothing to score
    # sizes, as shares of the image: i1's box is 0.25% (small), i2's 4% (medium), none large
    assert got["artifact"]["AP_small"] == pytest.approx(1.0) and got["artifact"]["AP_large"] is None
    # a box without importance ranks after every scored one: the false alarm moves last, AP becomes 1
    preds["i1"][1] = _d((800, 800, 900, 900), None)
    assert coco_ap(_gt(), preds)["artifact"]["AP"] == pytest.approx(1.0)
    # nothing predicted: 0, not missing
    assert coco_ap(_gt(), {})["artifact"]["AP"] == 0.0


def test_interpolated_ap_matches_pycocotools_on_random_rankings():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n_gt = int(rng.integers(1, 8))
        tp = rng.integers(0, 2, size=int(rng.integers(0, 12))).astype(float)
        tp[np.cumsum(tp) > n_gt] = 0  # at most n_gt hits
        gt = [ImageRecord(image_id=f"g{k}", defects=[_d((10 * k, 0, 10 * k + 9, 9), 50)]) for k in range(n_gt)]
        preds: dict[str, list[Defect]] = {}
        hit = 0
        for k, t in enumerate(tp):  # scores fall with k; a hit lands exactly on the next unmatched box
            box = (10 * hit, 0, 10 * hit + 9, 9) if t else (500, 500 + k, 600, 600 + k)
            preds.setdefault(f"g{hit if t else 0}", []).append(_d(box, 99 - k))
            hit += int(t)
        assert interpolated_ap(tp, n_gt) == pytest.approx(coco_ap(gt, preds)["artifact"]["AP50"], abs=1e-9)


def test_joint_ap_needs_the_box_and_the_description():
    """One box, predicted exactly, its description 0.6 similar: a hit where the similarity threshold is 0.5, a
    miss at 0.7 and 0.9, at every IoU threshold: mAP over the 3 x 3 grid = 1/3."""
    gt = [ImageRecord(image_id="i", defects=[_d((0, 0, 500, 500), 50, desc="a melted hand")])]
    preds = {"i": [_d((0, 0, 500, 500), 80, desc="a hand, odd")]}

    def sim(a, b):
        return np.array([[1.0 if x == y else 0.6 for y in b] for x in a])

    got = joint_ap(gt, preds, sim)
    assert got["artifact"]["grid"]["0.5/0.5"] == 1.0 and got["artifact"]["grid"]["0.5/0.7"] == 0.0
    assert got["artifact"]["mAP"] == pytest.approx(1 / 3) and got["overall"]["mAP"] == pytest.approx(1 / 3)
    assert got["misalignment"]["mAP"] is None
    exact = {"i": [_d((0, 0, 500, 500), 80, desc="a melted hand")]}
    assert joint_ap(gt, exact, sim)["artifact"]["mAP"] == 1.0
