"""SDG-Eval against hand-computed numbers (see the comment above each expectation)."""

import json

import pytest

from sdg_data.records import LABELS, ImageRecord
from sdg_data.scoring.embedding import CachedEmbedder
from sdg_data.scoring.evaluation import EvalConfig, evaluate, evaluate_files, format_table, index_predictions
from tests.conftest import TableEmbedder, defect


def rec(iid, gen, defects):
    return ImageRecord(image_id=iid, generator=gen, defects=defects)


FULL = [0, 0, 100, 100]
GT = [
    rec("i1", "A", [defect(FULL, "artifact", "g1", 50)]),
    rec("i2", "A", [defect(FULL, "artifact", "g2", 40)]),
    rec("i3", "B", []),
    rec("i4", "B", []),
    rec("i5", "B", [defect([200, 200, 400, 400], "misalignment", "g5", 60)]),
    rec("i6", "A", [defect(FULL, "artifact", "g6", 90)]),
]
PRED = {
    "i1": [defect([0, 0, 100, 50], "artifact", "p1", 70)],  # IoU exactly 0.5
    "i2": [defect([0, 0, 100, 10], "artifact", "p2", None)],  # IoU exactly 0.1, no importance
    "i3": [defect([0, 0, 10, 10], "artifact", "p3", 10)],  # false alarm on a clean image
    "i4": [],
    "i5": [defect([200, 200, 400, 400], "artifact", "p5", 60)],  # right box, wrong label
    "i6": [defect(FULL, "artifact", "p6", 90), defect(FULL, "artifact", "p6", 90)],  # duplicate prediction
}


def test_hand_computed_overall():
    r = evaluate(GT, PRED)
    art, mis = r["artifact"], r["misalignment"]
    # artifact image level: TP i1 i2 i6, FP i3 i5, TN i4 -> F1 = 6/8, ClnAcc = 1/3
    assert art["DetTypeF1"] == pytest.approx(0.75)
    assert art["ClnAcc"] == pytest.approx(1 / 3)
    # GT>0 images i1 i2 i6: |G| = 3, |P| = 4; matched at 0.1: 3 (0.5, 0.1 and 1.0); at 0.5: 2 (edge counts)
    assert art["BoxPr@0.1"] == pytest.approx(3 / 4) and art["BoxRe@0.1"] == pytest.approx(1.0)
    assert art["BoxF1@0.1"] == pytest.approx(6 / 7)
    assert art["BoxPr@0.5"] == pytest.approx(2 / 4) and art["BoxRe@0.5"] == pytest.approx(2 / 3)
    assert art["BoxF1@0.5"] == pytest.approx(4 / 7)
    # ImpAcc over the three 0.1-pairs: 1-20/100, 0 (no predicted importance), 1 -> 0.6
    assert art["ImpAcc@0.1"] == pytest.approx(0.6)
    assert art["DescCos@0.1"] is None  # no embedder
    # misalignment: i5 missed (label mismatch is no match), the five others clean and predicted clean
    assert mis["DetTypeF1"] == 0.0 and mis["ClnAcc"] == 1.0
    assert mis["BoxPr@0.1"] is None and mis["BoxRe@0.1"] == 0.0 and mis["BoxF1@0.1"] == 0.0
    assert r["counts"]["artifact"]["gt_boxes"] == 3 and r["counts"]["artifact"]["pred_boxes"] == 4


def test_box_scope_all_counts_false_alarm_boxes():
    r = evaluate(GT, PRED, EvalConfig(box_scope="all"))
    # + the boxes predicted on i3 and i5 -> |P| = 6
    assert r["artifact"]["BoxF1@0.1"] == pytest.approx(6 / 9)
    assert r["artifact"]["BoxPr@0.5"] == pytest.approx(2 / 6)


def test_generator_breakdown():
    r = evaluate(GT, PRED)
    a, b = r["by_generator"]["A"]["artifact"], r["by_generator"]["B"]["artifact"]
    assert a["DetTypeF1"] == 1.0 and a["ClnAcc"] is None  # A: i1 i2 i6 all TP
    assert b["DetTypeF1"] == 0.0 and b["ClnAcc"] == pytest.approx(1 / 3)  # B: FP i3 i5, TN i4
    assert a["BoxF1@0.5"] == pytest.approx(4 / 7)
    assert r["counts"]["by_generator"] == {"A": 3, "B": 3}
    table = format_table(r)
    assert "Artifact" in table and "  A (3)" in table and "  B (3)" in table


@pytest.mark.parametrize(
    ("gt", "pred", "det", "cln"),
    [
        ([], [], None, 1.0),  # clean and predicted clean: TN
        ([], [defect(FULL)], 0.0, 0.0),  # false alarm
        ([defect(FULL)], [], 0.0, None),  # missed
        ([defect(FULL)], [defect(FULL)], 1.0, None),
    ],
)
def test_empty_cases(gt, pred, det, cln):
    r = evaluate([rec("x", "A", gt)], {"x": pred})
    assert r["artifact"]["DetTypeF1"] == det
    assert r["artifact"]["ClnAcc"] == cln


def test_missing_prediction_counts_as_no_defect():
    r = evaluate([rec("x", "A", [defect(FULL)])], {})
    assert r["artifact"]["DetTypeF1"] == 0.0 and r["artifact"]["BoxRe@0.1"] == 0.0


def test_hungarian_vs_greedy():
    # IoU: p1-g1 .667, p1-g2 .538, p2-g1 .4, p2-g2 0. Greedy takes p1-g1 first and strands p2;
    # Hungarian (max total IoU) takes p1-g2 + p2-g1.
    gt = [rec("x", "A", [defect([0, 0, 100, 100]), defect([50, 0, 150, 100])])]
    pred = {"x": [defect([20, 0, 120, 100]), defect([0, 0, 40, 100])]}
    h = evaluate(gt, pred, EvalConfig(match="hungarian"))
    g = evaluate(gt, pred, EvalConfig(match="greedy"))
    assert h["counts"]["artifact"]["matched@0.1"] == 2 and h["counts"]["artifact"]["matched@0.5"] == 1
    assert g["counts"]["artifact"]["matched@0.1"] == 1 and g["counts"]["artifact"]["matched@0.5"] == 1
    assert h["artifact"]["BoxF1@0.1"] == pytest.approx(1.0) and g["artifact"]["BoxF1@0.1"] == pytest.approx(0.5)


def test_desc_cos_uses_matched_pairs_only():
    table = {"g": [1, 0], "p_close": [0.6, 0.8], "p_far": [0, 1], "g2": [1, 1]}
    emb = CachedEmbedder(TableEmbedder(table))
    gt = [rec("x", "A", [defect(FULL, "artifact", "g"), defect([500, 500, 600, 600], "artifact", "g2")])]
    pred = {"x": [defect(FULL, "artifact", "p_close"), defect([900, 900, 950, 950], "artifact", "p_far")]}
    r = evaluate(gt, pred, embedder=emb)
    assert r["artifact"]["DescCos@0.1"] == pytest.approx(0.6)  # only the IoU>=0.1 pair g / p_close
    assert emb.inner.calls == [["g", "p_close"]]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_files_with_yxyx_and_raw_responses(tmp_path):
    _write(
        tmp_path / "gt.jsonl",
        [
            {
                "image_id": "a",
                "generator": "G",
                "defects": [{"box_2d": FULL, "label": "artifact", "description": "d", "importance": 50}],
            },
            {"image_id": "b", "defects": []},
        ],
    )
    resp = '<think>t</think><answer>[{"box_2d": [0, 0, 100, 50], "label": "artifact", "description": "d"}]</answer>'
    _write(tmp_path / "pred.jsonl", [{"image_id": "a", "response": resp}, {"image_id": "b", "response": "garbage"}])
    # read as yxyx, [0, 0, 100, 50] is x 0-50, y 0-100: IoU 0.5 either way, so check the counts
    rep = evaluate_files(
        tmp_path / "gt.jsonl",
        tmp_path / "pred.jsonl",
        tmp_path / "r.json",
        EvalConfig(embedder="none", box_order="yxyx"),
    )
    assert rep["artifact"]["BoxF1@0.5"] == 1.0
    assert rep["predictions"]["format_failures"] == 1 and rep["predictions"]["unparseable"] == 1
    saved = json.loads((tmp_path / "r.json").read_text())
    assert set(saved["artifact"]) == {
        "DetTypeF1",
        "ClnAcc",
        "BoxPr@0.1",
        "BoxRe@0.1",
        "BoxF1@0.1",
        "BoxPr@0.5",
        "BoxRe@0.5",
        "BoxF1@0.5",
        "DescCos@0.1",
        "ImpAcc@0.1",
    }
    assert set(saved) >= {"artifact", "misalignment", "by_generator"}


def test_yxyx_changes_the_box(tmp_path):
    _write(
        tmp_path / "gt.jsonl",
        [{"image_id": "a", "defects": [{"box_2d": [0, 0, 100, 20], "label": "artifact", "description": "d"}]}],
    )
    _write(
        tmp_path / "pred.jsonl",
        [{"image_id": "a", "defects": [{"box_2d": [0, 0, 20, 100], "label": "artifact", "description": "d"}]}],
    )
    xy = evaluate_files(tmp_path / "gt.jsonl", tmp_path / "pred.jsonl", None, EvalConfig(embedder="none"))
    yx = evaluate_files(
        tmp_path / "gt.jsonl", tmp_path / "pred.jsonl", None, EvalConfig(embedder="none", box_order="yxyx")
    )
    assert xy["artifact"]["BoxF1@0.5"] == 0.0 and yx["artifact"]["BoxF1@0.5"] == 1.0


def test_strict_format_drops_salvaged_defects():
    resp = '<answer>[{"box_2d": [0, 0, 100, 100], "label": "artifact", "description": "d"}]</answer>'  # no think
    lenient, _ = index_predictions([(1, {"image_id": "a", "response": resp})], EvalConfig())
    strict, stats = index_predictions([(1, {"image_id": "a", "response": resp})], EvalConfig(strict_format=True))
    assert len(lenient["a"]) == 1 and strict["a"] == []
    assert stats["format_failures"] == 1 and stats["examples"][0]["reason"] == "no <think> block"


def test_bad_prediction_lines_name_line_and_field():
    with pytest.raises(ValueError, match="pred:3: record 'a' field 'image_id': duplicate"):
        index_predictions(
            [(1, {"image_id": "a", "defects": []}), (3, {"image_id": "a", "defects": []})], EvalConfig(), "pred"
        )
    with pytest.raises(ValueError, match="need 'defects' or 'response'"):
        index_predictions([(1, {"image_id": "a"})], EvalConfig(), "pred")


def test_per_image_sums_give_back_every_reported_metric_and_the_intervals_hold_them(tmp_path):
    """The bootstrap resamples per-image sums: added over all images they must reproduce the report exactly, and
    each interval must hold its point value."""
    from sdg_data.scoring.evaluation import HEADLINE, bootstrap, metrics_from_sums
    from tests.conftest import DEMO

    cfg = EvalConfig(embedder="lexical", bootstrap=300)
    r = evaluate_files(DEMO / "gt.jsonl", DEMO / "pred.jsonl", tmp_path / "e.json", cfg)
    from sdg_data.scoring.evaluation import read_per_image

    per = read_per_image(tmp_path / "e.json")
    total = per["sums"].sum(axis=0)
    for k, label in enumerate(LABELS):
        again = metrics_from_sums(total[k], per["has_cos"])
        for m in HEADLINE:
            assert again[m] == pytest.approx(r[label][m]) if r[label][m] is not None else again[m] is None, (label, m)
            ci = r["bootstrap"][label][m]
            if ci is not None and r[label][m] is not None:
                assert ci[0] - 1e-9 <= r[label][m] <= ci[1] + 1e-9, (label, m, ci, r[label][m])
    assert bootstrap(per, 50, seed=1) == bootstrap(per, 50, seed=1)  # seeded


def test_compare_is_paired_and_says_when_a_difference_is_clear(tmp_path):
    from sdg_data.scoring.evaluation import compare
    from tests.conftest import DEMO

    cfg = EvalConfig(embedder="none")
    evaluate_files(DEMO / "gt.jsonl", DEMO / "pred.jsonl", tmp_path / "a.json", cfg)
    same = compare(tmp_path / "a.json", tmp_path / "a.json", n=200)
    assert all(v["diff"] in (0, None) and not v["clear"] for v in same["metrics"].values())
    # B predicts the ground truth itself: better on every box metric, and clearly so on artifact boxes
    evaluate_files(DEMO / "gt.jsonl", DEMO / "gt.jsonl", tmp_path / "b.json", cfg)
    c = compare(tmp_path / "a.json", tmp_path / "b.json", n=400)
    assert c["images"] == 8 and c["metrics"]["artifact/BoxF1@0.1"]["diff"] > 0
    assert c["metrics"]["artifact/BoxF1@0.5"]["b"] == 1.0 and c["metrics"]["artifact/BoxF1@0.5"]["clear"]
    report = json.loads((tmp_path / "a.json").read_text())
    (tmp_path / "c.json").write_text(json.dumps({**report, "per_image_file": "../x.npz"}))
    with pytest.raises(ValueError, match="no per-image file"):
        compare(tmp_path / "a.json", tmp_path / "c.json")


@pytest.mark.parametrize("method", ["hungarian", "greedy"])
def test_matched_pairs_equal_the_plain_loop_over_images(method):
    """The columns' matching gives, slot by slot, the pairs ``match`` gives on each image's IoU matrix, in its
    order: random images with duplicate boxes (ties), crossing boxes, empty sides and up to 6 boxes a side."""
    import numpy as np

    from sdg_data.boxes import boxes_array, iou_matrix
    from sdg_data.matching import match, match_lone
    from sdg_data.scoring.evaluation import matched_pairs
    from sdg_data.scoring.table import ScoringTable

    rng = np.random.default_rng(11)
    gt, preds = [], {}
    for k in range(400):
        boxes = []
        for _ in range(int(rng.integers(0, 7))):
            if boxes and rng.random() < 0.2:
                boxes.append(defect(boxes[-1].box.to_grid(), boxes[-1].label, "dup", 50))
                continue
            x0, y0 = rng.integers(0, 900, 2)
            boxes.append(defect([int(x0), int(y0), int(x0 + rng.integers(5, 100)), int(y0 + rng.integers(5, 100))],
                                str(rng.choice(LABELS)), "g", 50))  # fmt: skip
        gt.append(rec(f"i{k}", "A", boxes))
        guesses = []
        for b in boxes + boxes[:2]:
            x0, y0, x1, y1 = np.clip(np.array(b.box.to_grid()) + rng.integers(-20, 20, 4), 0, 1000).tolist()
            if x1 > x0 and y1 > y0 and rng.random() < 0.85:
                guesses.append(defect([x0, y0, x1, y1], b.label, "p", 50))
                if rng.random() < 0.15:  # the same box twice
                    guesses.append(defect([x0, y0, x1, y1], b.label, "p", 50))
        if rng.random() < 0.3:  # a box far from everything (a row or column of zeros)
            guesses.append(defect([990, 990, 1000, 1000], str(rng.choice(LABELS)), "p", 50))
        preds[f"i{k}"] = guesses
    table = ScoringTable.build(gt, preds)
    got = matched_pairs(table, method)
    want = []
    for i, r in enumerate(gt):
        for k_label, label in enumerate(LABELS):
            g = [d for d in r.defects if d.label == label]
            p = [d for d in preds[r.image_id] if d.label == label]
            if not (g and p):
                continue
            iou = iou_matrix(boxes_array([d.box for d in g]), boxes_array([d.box for d in p]))
            rows, cols = (
                ((np.zeros(1, int), np.zeros(1, int)) if match_lone(float(iou[0, 0]), method) else ([], []))
                if iou.size == 1 else match(iou, method)
            )  # fmt: skip
            start = table.pair_start[i * len(LABELS) + k_label]
            want += [int(start + r_ * len(p) + c_) for r_, c_ in zip(rows, cols, strict=True)]
    assert got.tolist() == want


def test_clear_assignments_are_the_solvers_and_leave_it_the_unclear_ones():
    """On matrices of a few values (many ties), every matrix ``clear_assignments`` decides gets the solver's
    pairs, in its order; the ones it leaves have a tie on the smaller side's best partners or a shared one."""
    import numpy as np

    from sdg_data.matching import clear_assignments, hungarian

    rng = np.random.default_rng(2)
    decided = 0
    for a, b in [(1, 1), (1, 3), (3, 1), (2, 2), (2, 4), (4, 2), (3, 3), (5, 4)]:
        v = rng.choice([0.0, 0.2, 0.5, 0.5000000001, 0.8], size=(300, a, b))
        sure, rows, cols = clear_assignments(v)
        for k, s in enumerate(np.flatnonzero(sure)):
            r, c = hungarian(v[s])
            assert rows[k].tolist() == r.tolist() and cols[k].tolist() == c.tolist(), (a, b, s)
        small = v if a <= b else np.swapaxes(v, 1, 2)
        for s in np.flatnonzero(~sure):
            top = np.sort(small[s], axis=1)
            best = small[s].argmax(axis=1)
            assert (top.shape[1] > 1 and (top[:, -1] - top[:, -2] <= 1e-9).any()) or len(set(best)) < len(best)
        decided += int(sure.sum())
    assert decided > 500  # most are decided without the solver
