"""The GRPO reward against hand-computed values; constants from sdg-method.md section 3."""

import json
import math

import pytest

from sdg_data.answer import parse_response, render_response
from sdg_data.records import RecordError
from sdg_data.scoring.embedding import CachedEmbedder
from sdg_data.scoring.reward import RewardConfig, SDGReward, gt_defects, reward_files, score
from tests.conftest import TableEmbedder, defect


C07 = [0.7, math.sqrt(1 - 0.49)]  # cosine 0.7 with [1, 0]
TABLE = {"same": [1, 0], "close": C07, "far": [0, 1], "g": [1, 0], "g2": [1, 0]}


def emb():
    return CachedEmbedder(TableEmbedder(TABLE))


def run(gt, pred_defects, cfg=None, text=None):
    parsed = [parse_response(text if text is not None else render_response("t", pred_defects))]
    return score(parsed, [gt], emb(), cfg)[0]


FULL = [0, 0, 100, 100]


@pytest.mark.parametrize(
    ("gt", "pred", "case", "r_box", "total"),
    [
        ([], [], "both_empty", 0.3, 0.18),
        ([defect(FULL, "artifact", "g", 50)], [], "missed", -0.8, -0.48),
        ([], [defect(FULL, "artifact", "same", 50)], "false_alarm", -0.3, -0.18),
    ],
)
def test_empty_cases(gt, pred, case, r_box, total):
    r = run(gt, pred)
    assert r.case == case and r.format_ok
    assert r.r_box == pytest.approx(r_box) and r.reward == pytest.approx(total)
    assert r.r_desc == 0.0 and r.r_imp == 0.0


def test_format_gate():
    r = run([defect(FULL, "artifact", "g", 50)], [], text="<answer>[]</answer>")
    assert r.reward == -1.0 and not r.format_ok and r.case == "format_fail" and r.reason == "no <think> block"


def test_perfect_match_is_one():
    r = run([defect(FULL, "artifact", "g", 60)], [defect(FULL, "artifact", "same", 60)])
    assert (r.r_box, r.r_desc, r.r_imp, r.reward) == pytest.approx((1.0, 1.0, 1.0, 1.0))


def test_label_mismatch_is_never_matched():
    # two unmatched boxes: (0 - 0.5 * 2) / 1 = -1
    r = run([defect(FULL, "artifact", "g", 60)], [defect(FULL, "misalignment", "same", 60)])
    assert r.n_matched == 0 and r.r_box == pytest.approx(-1.0) and r.reward == pytest.approx(-0.6)


def test_diou_and_partial_terms_by_hand():
    # DIoU([0,0,100,100], [50,0,150,100]) = 1/3 - 2500/32500; cos 0.7 -> (0.7-0.5)/0.4 = 0.5;
    # missing GT importance counts as 50, prediction 75 -> 1 - 25/50 = 0.5
    r = run([defect(FULL, "artifact", "g", None)], [defect([50, 0, 150, 100], "artifact", "close", 75)])
    diou = 1 / 3 - 2500 / 32500
    assert r.r_box == pytest.approx(diou) and r.r_desc == pytest.approx(0.5) and r.r_imp == pytest.approx(0.5)
    assert r.reward == pytest.approx(0.6 * diou + 0.25 * 0.5 + 0.15 * 0.5)


def test_unmatched_gt_and_duplicate_predictions():
    # 2 GT, 1 exact prediction: (1 - 0.5) / 2 = 0.25; desc 1/2; imp 1/2
    r = run(
        [defect(FULL, "artifact", "g", 50), defect([500, 500, 600, 600], "artifact", "g2", 50)],
        [defect(FULL, "artifact", "same", 50)],
    )
    assert (r.r_box, r.r_desc, r.r_imp) == pytest.approx((0.25, 0.5, 0.5))
    assert r.reward == pytest.approx(0.6 * 0.25 + 0.25 * 0.5 + 0.15 * 0.5)
    # 1 GT, the same box predicted three times: (1 - 0.5 * 2) / 3 = 0
    r = run([defect(FULL, "artifact", "g", 50)], [defect(FULL, "artifact", "same", 50)] * 3)
    assert r.n_matched == 1 and r.r_box == pytest.approx(0.0) and r.r_desc == pytest.approx(1 / 3)


def test_no_iou_threshold_and_clipping():
    # disjoint boxes still match (no threshold): DIoU negative, R_box = DIoU
    far = defect([900, 900, 1000, 1000], "artifact", "far", 1)
    r = run([defect(FULL, "artifact", "g", 100)], [far])
    assert r.n_matched == 1 and r.r_box < 0 and r.r_desc == 0.0
    assert r.r_imp == 0.0  # |1 - 100| / 50 > 1, clipped at 0
    # nothing label-compatible: 6 unmatched boxes, (0 - 0.5 * 6) / max(1, 5) = -0.6
    r = run(
        [defect(FULL, "artifact", "g", 50)],
        [defect([10 * k, 500, 10 * k + 5, 505], "misalignment", "far") for k in range(5)],
    )
    assert r.n_matched == 0 and r.r_box == pytest.approx(-0.6)


def test_desc_term_clipped_both_ends():
    r = run([defect(FULL, "artifact", "g", 50)], [defect(FULL, "artifact", "far", 50)])  # cos 0 -> 0
    assert r.r_desc == 0.0
    r = run([defect(FULL, "artifact", "g", 50)], [defect(FULL, "artifact", "same", 50)])  # cos 1 -> 1.25 -> 1
    assert r.r_desc == 1.0


def test_weights_from_config():
    cfg = RewardConfig(w_box=1.0, w_desc=0.0, w_imp=0.0, both_empty=0.5)
    assert run([], [], cfg).reward == pytest.approx(0.5)


def test_batch_equals_one_by_one_and_one_embedding_call():
    gts = [[defect(FULL, "artifact", "g", 50)], [], [defect(FULL, "misalignment", "g2", 20)], [defect(FULL)]]
    preds = [
        [defect([0, 0, 90, 100], "artifact", "close", 40)],
        [defect(FULL)],
        [defect([10, 10, 90, 90], "misalignment", "same", 30), defect(FULL, "artifact", "far")],
        [],
    ]
    parsed = [parse_response(render_response("t", p)) for p in preds]
    e = emb()
    batch = score(parsed, gts, e)
    assert len(e.inner.calls) == 1
    for p, g, b in zip(parsed, gts, batch):
        assert score([p], [g], emb())[0].reward == pytest.approx(b.reward)


def test_trl_reward_function_with_dataset_column_and_logging():
    fn = SDGReward(embedder=emb())
    gt_col = [json.dumps([{"box_2d": FULL, "label": "artifact", "description": "g", "importance": 60}]), []]
    completions = [
        [{"role": "assistant", "content": render_response("t", [defect(FULL, "artifact", "same", 60)])}],
        [{"role": "assistant", "content": "no tags at all"}],
    ]
    logged = {}
    out = fn(
        prompts=[None, None],
        completions=completions,
        gt_defects=gt_col,
        image=[None, None],
        log_metric=lambda k, v: logged.__setitem__(k, v),
        trainer_state=None,
    )
    assert out == pytest.approx([1.0, -1.0])
    assert logged["sdg/parse_failures"] == 1.0 and logged["sdg/format_fail_rate"] == 0.5
    assert logged["sdg/r_box"] == pytest.approx(1.0)
    assert fn.__name__ == "sdg_reward" and fn.last[1].reason == "no <think> block"
    with pytest.raises(KeyError, match="gt_defects"):
        fn(completions=completions)


def test_bad_ground_truth_names_the_row():
    with pytest.raises(RecordError, match="row 3"):
        gt_defects([{"box_2d": [5, 5, 1, 1], "label": "artifact"}], 3)


def test_reward_files(tmp_path):
    (tmp_path / "gt.jsonl").write_text(json.dumps({"image_id": "a", "defects": []}) + "\n")
    (tmp_path / "pred.jsonl").write_text(
        json.dumps({"image_id": "a", "response": "<think>t</think><answer>[]</answer>"}) + "\n"
    )
    rows, summary = reward_files(
        tmp_path / "gt.jsonl", tmp_path / "pred.jsonl", tmp_path / "out.jsonl", RewardConfig(), None
    )
    line = json.loads((tmp_path / "out.jsonl").read_text())
    assert line["image_id"] == "a" and line["reward"] == pytest.approx(0.18) and line["format_ok"] is True
    assert {"r_box", "r_desc", "r_imp", "case"} <= set(line)


def test_group_rows_share_one_parsed_ground_truth():
    """trl hands a prompt's row over once per generation: equal consecutive cells are parsed once and laid out
    once, with the same rewards as separate copies."""
    cell = [{"box_2d": FULL, "label": "artifact", "description": "g", "importance": 60}]
    other = [{"box_2d": [0, 0, 50, 50], "label": "misalignment", "description": "g2"}]
    cells = [cell, json.loads(json.dumps(cell)), other, other]
    completions = [
        render_response("t", [defect(FULL, "artifact", "same", 60)]),
        render_response("t", [defect([0, 0, 90, 100], "artifact", "close", 40)]),
        render_response("t", [defect([0, 0, 50, 40], "misalignment", "far")]),
        "no tags",
    ]
    fn = SDGReward(embedder=emb())
    shared = fn(completions=completions, gt_defects=cells)
    separate = [SDGReward(embedder=emb())(completions=[c], gt_defects=[g])[0] for c, g in zip(completions, cells)]
    assert shared == pytest.approx(separate)
    parsed = [parse_response(c) for c in completions]
    one = gt_defects(cell)
    assert [r.reward for r in score(parsed[:2], [one, one], emb())] == pytest.approx(separate[:2])
