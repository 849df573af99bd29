"""COCO AP (on the run's columns, against pycocotools and faster-coco-eval) and the DenseCap-style joint AP,
against hand-computed cases and the plain algorithms."""

from __future__ import annotations

import numpy as np
import pytest

from sdg_data.boxes import Box
from sdg_data.records import Defect, ImageRecord
from sdg_data.scoring.ap import coco_ap, interpolated_ap, joint_ap


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


def _hard_set(rng: np.random.Generator, n_images: int):
    """Random images built to reach every rule of COCO's matching and ranking: duplicate boxes (IoU ties between
    ground-truth boxes and between detections), repeated scores across and within images, boxes without
    importance, areas exactly on a size boundary (10,000 and 100,000 grid units: 1% and 10%), images with more
    than 100 detections of one label, images with detections and no ground truth and the reverse."""
    gt, preds = [], {}
    labels = ["artifact", "misalignment"]
    for k in range(n_images):
        boxes = []
        for _ in range(int(rng.integers(0, 5))):
            kind = rng.random()
            if kind < 0.15:  # exactly 1% or 10% of the image
                side = 100 if rng.random() < 0.5 else 250
                x0, y0 = rng.integers(0, 600, 2)
                box = (x0, y0, x0 + side, y0 + (100 if side == 100 else 400))
            elif kind < 0.3 and boxes:  # a duplicate of the previous box
                box = tuple(boxes[-1].box)
            else:
                x0, y0 = rng.integers(0, 900, 2)
                box = (x0, y0, x0 + rng.integers(3, 400), y0 + rng.integers(3, 400))
            box = tuple(int(min(v, 1000)) for v in box)
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            boxes.append(_d(box, 50, str(rng.choice(labels))))
        gt.append(ImageRecord(image_id=f"i{k}", defects=boxes))
        guesses = []
        for b in boxes + boxes[:2]:  # near each box, a second guess at the first two
            if rng.random() < 0.15:
                continue
            j = rng.integers(-25, 25, 4) if rng.random() < 0.8 else np.zeros(4, dtype=int)
            x0, y0, x1, y1 = np.clip(np.array(b.box.to_grid()) + j, 0, 1000).tolist()
            if x1 > x0 and y1 > y0:
                guesses.append(_d((x0, y0, x1, y1), None if rng.random() < 0.15 else int(rng.choice([30, 60, 90])),
                                  b.label if rng.random() < 0.9 else str(rng.choice(labels))))  # fmt: skip
        for _ in range(int(rng.integers(0, 3))):  # false alarms
            x0, y0 = rng.integers(0, 900, 2)
            guesses.append(_d((x0, y0, x0 + 50, y0 + 50), int(rng.choice([30, 60, 90])), str(rng.choice(labels))))
        if k % 17 == 3:  # a flood: more than 100 detections of one label (COCO keeps the 100 best scored)
            guesses += [_d((5 * i, 5 * i, 5 * i + 120, 5 * i + 90), int(rng.integers(1, 100)))
                        for i in range(130)]  # fmt: skip
        preds[f"i{k}"] = guesses
    # rules random boxes rarely reach, one image each
    a = "artifact"
    edge = {
        # a detection with the same IoU (0.6) to two different boxes: COCO takes the last; a second detection
        # fits only the first, so the choice shows in its hit or miss
        "tie": ([(0, 0, 60, 100), (0, 0, 100, 60)], [((0, 0, 100, 100), 90), ((0, 0, 60, 100), 80)]),
        # among the small ones, a box under 1% (IoU 0.9) and one just over (IoU 0.95): COCO takes the box inside
        # the size range even though the other overlaps more
        "range": ([(0, 0, 100, 90), (0, 0, 100, 105)], [((0, 0, 100, 100), 70)]),
        # IoUs exactly on each threshold, 0.50 to 0.95
        **{f"thr{h}": ([(0, 0, 100, h)], [((0, 0, 100, 100), 40)]) for h in range(50, 100, 5)},
    }
    for name, (g_boxes, p_boxes) in edge.items():
        gt.append(ImageRecord(image_id=name, defects=[_d(b, 50, a) for b in g_boxes]))
        preds[name] = [_d(b, sc, a) for b, sc in p_boxes]
    return gt, preds


def test_coco_columns_are_pycocotools_bit_for_bit():
    """The default backend's precision arrays equal pycocotools' exactly (and faster-coco-eval's up to its
    float rounding, 1 ulp), overall and per group, on sets built to hit every tie and edge rule."""
    from sdg_data.scoring import ap as ap_mod
    from sdg_data.scoring.table import ScoringTable

    seen: list[np.ndarray] = []
    real_figures = ap_mod._figures

    def keep(precision, present):
        seen.append(precision)
        return real_figures(precision, present)

    for seed in range(4):
        gt, preds = _hard_set(np.random.default_rng(seed), 60)
        n = len(gt)
        groups = {"all": np.arange(n), "odd": np.arange(1, n, 2), "one": np.array([3]), "few": np.array([0, 7, 44]),
                  "edges": np.arange(60, n)}  # fmt: skip
        mine = ap_mod._coco_columns(ScoringTable.build(gt, preds), groups)
        for backend, exact in (("pycocotools", True), ("faster-coco-eval", False)):
            seen.clear()
            ap_mod._figures = keep
            try:
                ap_mod._coco_evaluator(ScoringTable.build(gt, preds), groups, backend)
            finally:
                ap_mod._figures = real_figures
            for name, theirs in zip(groups, seen, strict=True):
                if exact:
                    assert np.array_equal(mine[name], theirs), (seed, backend, name)
                else:
                    assert np.allclose(mine[name], theirs, rtol=0, atol=1e-15), (seed, backend, name)
        # and the figures as the report gives them
        for backend in ("pycocotools", "faster-coco-eval"):
            _same(coco_ap(gt, preds, groups=groups), coco_ap(gt, preds, backend=backend, groups=groups), groups)


def test_faster_coco_eval_gives_pycocotools_numbers():
    rng = np.random.default_rng(1)
    gt, preds = [], {}
    for k in range(40):
        boxes = []
        for _ in range(int(rng.integers(0, 4))):
            x0, y0 = rng.integers(0, 900, 2)
            boxes.append(_d((x0, y0, x0 + rng.integers(5, 100), y0 + rng.integers(5, 100)), 50,
                            str(rng.choice(["artifact", "misalignment"]))))  # fmt: skip
        gt.append(ImageRecord(image_id=f"i{k}", defects=boxes))
        preds[f"i{k}"] = [Defect(Box(*np.clip(np.array(b.box.to_grid()) + rng.integers(-15, 15, 4), 0, 1000)),
                                 b.label, "x", int(rng.choice([10, 50, 90])) if rng.random() < 0.8 else None)
                          for b in boxes if rng.random() < 0.8]  # fmt: skip
    fast, ref = coco_ap(gt, preds, backend="faster-coco-eval"), coco_ap(gt, preds, backend="pycocotools")
    _same(fast, ref)
    _same(coco_ap(gt, preds), ref)
    # groups (sdg eval's per-generator figures): one evaluation, one accumulation per group, against pycocotools
    # running each group on its own; uneven groups, one without any prediction, one of a single image
    preds["i39"] = []
    groups = {"all": range(40), "odd": range(1, 40, 2), "first": range(0, 7), "one": [39], "mixed": [3, 17, 22, 39]}
    fast, ref = coco_ap(gt, preds, groups=groups), coco_ap(gt, preds, backend="pycocotools", groups=groups)
    _same(coco_ap(gt, preds, backend="faster-coco-eval", groups=groups), ref, groups)
    for g in groups:
        _same(fast[g], ref[g])
        alone = coco_ap([gt[i] for i in groups[g]], preds, backend="pycocotools")  # a plain run on the group
        _same(fast[g], alone)


def _same(fast, ref, groups=None):
    if groups is not None:
        for g in groups:
            _same(fast[g], ref[g])
        return
    for name in fast:
        for k, v in fast[name].items():
            assert v == pytest.approx(ref[name][k], abs=1e-9) if v is not None else ref[name][k] is None, (name, k)


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
        return np.array([1.0 if x == y else 0.6 for x, y in zip(a, b, strict=True)])

    got = joint_ap(gt, preds, sim)
    assert got["artifact"]["grid"]["0.5/0.5"] == 1.0 and got["artifact"]["grid"]["0.5/0.7"] == 0.0
    assert got["artifact"]["mAP"] == pytest.approx(1 / 3) and got["overall"]["mAP"] == pytest.approx(1 / 3)
    assert got["misalignment"]["mAP"] is None
    exact = {"i": [_d((0, 0, 500, 500), 80, desc="a melted hand")]}
    assert joint_ap(gt, exact, sim)["artifact"]["mAP"] == 1.0


def _joint_reference(gt, preds, sim, t, s):
    """The plain algorithm, written out: every prediction over all images in score order; each takes the unmatched
    ground-truth box of its image and label with the highest IoU among those reaching t and s."""
    from sdg_data.boxes import boxes_array, iou_matrix

    out = {}
    for label in ("artifact", "misalignment"):
        items, used, n_gt = [], {}, 0
        for i, rec in enumerate(gt):
            g = [d for d in rec.defects if d.label == label]
            n_gt += len(g)
            used[i] = [False] * len(g)
            for j, d in enumerate(d for d in preds.get(rec.image_id, ()) if d.label == label):
                items.append((-(d.importance if d.importance is not None else -1), i, j, d, g))
        items.sort(key=lambda x: (x[0], x[1], x[2]))
        tp = []
        for _, i, _, d, g in items:
            best, best_iou = None, -1.0
            for r, gd in enumerate(g):
                iou = float(iou_matrix(boxes_array([gd.box]), boxes_array([d.box]))[0, 0])
                if not used[i][r] and iou >= t - 1e-9 and sim([gd.description], [d.description])[0] >= s - 1e-9:
                    if iou > best_iou:
                        best, best_iou = r, iou
            if best is not None:
                used[i][best] = True
            tp.append(1.0 if best is not None else 0.0)
        out[label] = interpolated_ap(np.asarray(tp), n_gt)
    return out


def test_joint_ap_equals_the_plain_algorithm_on_random_sets():
    rng = np.random.default_rng(5)
    words = ["hand", "face", "sky", "text", "dog"]

    def sim(a, b):
        return np.array([1.0 if x == y else (0.6 if x[:2] == y[:2] else 0.2) for x, y in zip(a, b, strict=True)])

    for _ in range(30):
        gt, preds = [], {}
        for k in range(int(rng.integers(1, 12))):
            boxes = []
            for _ in range(int(rng.integers(0, 4))):
                x0, y0 = rng.integers(0, 800, 2)
                boxes.append(_d((x0, y0, x0 + rng.integers(20, 200), y0 + rng.integers(20, 200)), 50,
                                str(rng.choice(["artifact", "misalignment"])), str(rng.choice(words))))  # fmt: skip
            gt.append(ImageRecord(image_id=f"i{k}", defects=boxes))
            guesses = []
            for b in boxes + boxes[:1]:  # near each box, and a repeat of the first: several per box
                x0, y0, x1, y1 = b.box.to_grid()
                j = rng.integers(-30, 30, 4)
                guesses.append(_d((max(0, x0 + j[0]), max(0, y0 + j[1]), min(1000, x1 + j[2] + 40),
                                   min(1000, y1 + j[3] + 40)), int(rng.choice([20, 50, 80])) if rng.random() < 0.9
                                  else None, b.label, str(rng.choice(words))))  # fmt: skip
            preds[f"i{k}"] = guesses
        got = joint_ap(gt, preds, sim, ious=(0.3, 0.5), sims=(0.5, 0.9))
        for t in (0.3, 0.5):
            for s in (0.5, 0.9):
                want = _joint_reference(gt, preds, sim, t, s)
                for label in ("artifact", "misalignment"):
                    v = got[label]["grid"][f"{t}/{s}"]
                    assert (v is None and want[label] is None) or v == pytest.approx(want[label]), (t, s, label)


def test_one_side_empty():
    """Predictions on a set without any ground truth, and ground truth without any prediction: figures, not errors
    (None where there is nothing to score, 0 where nothing was found), from every backend alike."""
    clean = [ImageRecord(image_id="c1", defects=[]), ImageRecord(image_id="c2", defects=[])]
    alarms = {"c1": [_d((0, 0, 50, 50), 90)], "c2": [_d((10, 10, 90, 90), None, "misalignment")]}
    for backend in ("sdg", "faster-coco-eval", "pycocotools"):
        got = coco_ap(clean, alarms, backend=backend)
        assert all(v is None for block in got.values() for v in block.values()), backend
        missed = coco_ap(_gt(), {}, backend=backend)
        assert missed["artifact"]["AP"] == 0.0 and missed["artifact"]["AP_large"] is None, backend
    assert joint_ap(clean, alarms, lambda a, b: np.ones(len(a)))["overall"]["mAP"] is None
    assert joint_ap(_gt(), {}, lambda a, b: np.ones(len(a)))["artifact"]["mAP"] == 0.0
