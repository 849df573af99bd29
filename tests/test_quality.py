"""Annotation quality at team scale, without a server: consensus merges on hand-built sets, gold scores, the queue's
places, escalation's decisions, the detector's sample disagreement and agreement's added figures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from annotation.config import AnnotateConfig
from annotation.consensus import consensus_record, merge_image
from annotation.pull import convert_export
from annotation.uiform import ui_region
from sdg_data.records import ImageRecord


def rec(who, defects, iid="x", aid=None, created="2026-12-01T00:00:00Z"):
    return ImageRecord.from_json(
        {"image_id": iid, "defects": defects, "caption": "a cat",
         "provenance": {"annotator": who, "annotation_id": aid or who, "created_at": created}}
    )  # fmt: skip


def d(box, label="artifact", desc="d", imp=50):
    return {"box_2d": box, "label": label, "description": desc, "importance": imp}


# ------------------------------------------------------------------ consensus, hand-built
def test_two_annotators_who_agree_give_the_median_box_and_importance():
    a = rec("a@x", [d([100, 100, 300, 300], desc="six fingers", imp=40)])
    b = rec("b@x", [d([110, 90, 310, 290], desc="an extra finger", imp=61)])
    merged, disputed, terms = merge_image({"a@x": a, "b@x": b})
    (m,) = merged
    assert terms["quorum"] == 2 and not disputed
    assert m.box.to_grid() == [105, 95, 305, 295]  # the mean of two is their median
    assert m.importance == 51  # median 50.5, rounded half up
    assert m.description == "six fingers"  # two descriptions tie: the first annotator's (sorted)
    assert m.provenance == {"origin": "consensus", "votes": 2, "of": 2, "annotators": ["a@x", "b@x"],
                            "annotation_ids": ["a@x", "b@x"]}  # fmt: skip


def test_two_annotators_who_disagree_leave_an_unresolved_image_and_two_disagreements():
    a = rec("a@x", [d([0, 0, 100, 100])])
    b = rec("b@x", [d([500, 500, 600, 600])])
    out = consensus_record({"a@x": a, "b@x": b})
    assert out.defects == [] and "no box reached 2 of 2" in out.provenance["consolidation"]["unresolved"]
    # one of three drew a box the two others did not see: a majority said clean, and that is a verdict
    c = consensus_record({"a@x": a, "c@x": rec("c@x", []), "e@x": rec("e@x", [])})
    assert c.defects == [] and "unresolved" not in c.provenance["consolidation"]
    dis = out.provenance["consolidation"]["disagreements"]
    assert [(x["votes"], x["needed"], x["boxes"][0]["annotator"]) for x in dis] == [(1, 2, "a@x"), (1, 2, "b@x")]
    assert out.provenance["annotator"] == "consensus"


def test_three_annotators_a_majority_of_two_merges_and_the_third_is_a_disagreement():
    a = rec("a@x", [d([100, 100, 200, 200], imp=30)])
    b = rec("b@x", [d([104, 100, 204, 200], imp=41)])
    c = rec("c@x", [d([700, 700, 800, 800], imp=90)])
    merged, disputed, terms = merge_image({"a@x": a, "b@x": b, "c@x": c})
    assert terms["quorum"] == 2
    (m,) = merged
    assert m.box.to_grid() == [102, 100, 202, 200] and m.importance == 36 and m.provenance["votes"] == 2
    (x,) = disputed
    assert x["boxes"][0]["annotator"] == "c@x" and x["boxes"][0]["box_2d"] == [700, 700, 800, 800]


def test_three_who_agree_give_the_coordinate_median_and_the_most_similar_description():
    a = rec("a@x", [d([100, 100, 200, 200], desc="one", imp=10)])
    b = rec("b@x", [d([120, 90, 210, 230], desc="two", imp=70)])
    c = rec("c@x", [d([105, 105, 195, 205], desc="three", imp=40)])
    # cosines: one-two 0.8, one-three 0, two-three 0.6 -> mean 0.4, 0.7, 0.3: "two" is the most similar
    vectors = {"one": np.array([1.0, 0.0]), "two": np.array([0.8, 0.6]), "three": np.array([0.0, 1.0])}
    (m,), _, _ = merge_image({"a@x": a, "b@x": b, "c@x": c}, vectors=vectors)
    assert m.box.to_grid() == [105, 100, 200, 205] and m.importance == 40 and m.description == "two"
    assert m.provenance["votes"] == 3


def test_an_even_split_is_not_a_majority_and_a_quorum_can_be_set():
    recs = {f"{k}@x": rec(f"{k}@x", [d([0, 0, 100, 100])] if k in "ab" else []) for k in "abcd"}
    merged, disputed, terms = merge_image(recs)
    assert terms["quorum"] == 3 and merged == [] and disputed[0]["votes"] == 2
    merged, _, _ = merge_image(recs, quorum=2)
    assert len(merged) == 1 and merged[0].provenance["of"] == 4
    # a quorum larger than the image's annotators keeps nothing
    assert merge_image({"a@x": recs["a@x"]}, quorum=2)[0] == []


def test_boxes_of_different_labels_in_the_same_place_never_merge():
    a = rec("a@x", [d([0, 0, 100, 100], "artifact")])
    b = rec("b@x", [d([0, 0, 100, 100], "misalignment")])
    merged, disputed, _ = merge_image({"a@x": a, "b@x": b})
    assert merged == [] and sorted(x["label"] for x in disputed) == ["artifact", "misalignment"]


def test_one_annotator_cannot_vote_twice_and_iou_below_the_threshold_splits():
    a = rec("a@x", [d([0, 0, 100, 100]), d([0, 0, 100, 110])])  # two near-identical boxes of one annotator
    b = rec("b@x", [d([0, 0, 100, 100])])
    merged, disputed, _ = merge_image({"a@x": a, "b@x": b})
    assert len(merged) == 1 and len(disputed) == 1 and disputed[0]["boxes"][0]["annotator"] == "a@x"
    c = rec("c@x", [d([0, 0, 100, 100])])
    e = rec("e@x", [d([40, 0, 140, 100])])  # IoU 60/140 = 0.43
    assert merge_image({"c@x": c, "e@x": e})[0] == []
    assert len(merge_image({"c@x": c, "e@x": e}, iou=0.4)[0]) == 1


def test_weighted_votes_need_a_weighted_majority():
    box = [d([0, 0, 100, 100])]
    w = {"a@x": 2.0, "b@x": 1.0, "c@x": 1.0}  # total 4; a majority of 2 of 3 is 2/3 of it, 2.67
    only = lambda who: {k: rec(k, box if k in who else []) for k in w}  # noqa: E731
    assert merge_image(only({"a@x"}), weights=w)[0] == []  # 2
    assert len(merge_image(only({"a@x", "b@x"}), weights=w)[0]) == 1  # 3
    assert merge_image(only({"b@x", "c@x"}), weights=w)[0] == []  # 2: two light votes lose
    assert len(merge_image(only({"b@x", "c@x"}))[0]) == 1  # unweighted they win


# ------------------------------------------------------------------ pull with consensus, and gold kept out
def _ann(aid, who, result, t="2026-12-01T10:00:00Z"):
    return {"id": aid, "completed_by": {"id": aid, "email": who}, "result": result, "created_at": t,
            "updated_at": t, "lead_time": 5.0}  # fmt: skip


def _box(x, y, w, h, imp, desc="melted ear", label="artifact"):
    return ui_region(f"r{x}{y}", label, x, y, w, h, desc, imp, 100, 100)


def _task(tid, iid, anns):
    return {"id": tid, "data": {"image_id": iid, "caption": "c"}, "annotations": anns}


def test_pull_consensus_against_earliest_on_a_three_annotator_image(tmp_path):
    """One image, three annotators: two draw the ear (IoU > 0.5), the earliest one only a hand. Earliest keeps the
    hand; consensus keeps the ear and lists the hand as a disagreement."""
    anns = [_ann(1, "c@x", _box(60, 60, 10, 10, 20, "hand"), "2026-12-01T09:00:00Z"),
            _ann(2, "a@x", _box(10, 10, 20, 20, 40)), _ann(3, "b@x", _box(11, 10, 20, 20, 60))]  # fmt: skip
    task = _task(1, "i1", anns)
    earliest = convert_export([task], AnnotateConfig(work_dir=str(tmp_path)))["records"][0]
    assert [x.description for x in earliest.defects] == ["hand"]
    cfg = AnnotateConfig(consolidation="consensus", embedder="lexical", work_dir=str(tmp_path))
    out = convert_export([task], cfg)
    (r,) = out["records"]
    (m,) = r.defects
    assert m.box.to_grid() == [105, 100, 305, 300] and m.importance == 50 and m.provenance["annotation_ids"] == [2, 3]
    assert out["counts"]["consensus_disagreements"] == 1 and out["counts"]["images_with_disagreements"] == 1
    from annotation.pull import write_outputs

    write_outputs(out, tmp_path / "p.jsonl")
    (row,) = [json.loads(x) for x in (tmp_path / "p.disagreements.jsonl").read_text().splitlines()]
    assert row["image_id"] == "i1" and row["boxes"][0]["annotator"] == "c@x" and row["unresolved"] is None
    # two annotators who each saw a different defect: no verdict, so no record (never a clean one); both anonymous
    # annotations vote apart
    split = _task(2, "i2", [{**_ann(4, "x", _box(10, 10, 20, 20, 40)), "completed_by": None},
                            {**_ann(5, "x", _box(60, 60, 20, 20, 40)), "completed_by": None}])  # fmt: skip
    out = convert_export([task, split], cfg)
    assert [r.image_id for r in out["records"]] == ["i1"] and out["counts"]["unresolved_images"] == 1
    (u,) = out["unresolved"]
    assert "no box reached 2 of 2 annotators and 0 drew none" in u.provenance["consolidation"]["unresolved"]
    write_outputs(out, tmp_path / "p.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "p.disagreements.jsonl").read_text().splitlines()]
    assert sorted(r["image_id"] for r in rows) == ["i1", "i2", "i2"] and rows[-1]["unresolved"]
    # a rerun with another policy leaves no stale disagreements behind
    write_outputs(convert_export([task, split], AnnotateConfig(work_dir=str(tmp_path))), tmp_path / "p.jsonl")
    assert not (tmp_path / "p.disagreements.jsonl").exists()


def _gold_store(tmp_path, records):
    path = tmp_path / "gold.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_gold_annotations_never_reach_the_records_and_are_scored(tmp_path):
    """Gold g1: one artifact [100,100,300,300] imp 80 "melted ear"; g2: clean.
    a@x: g1 the same box (IoU 1) imp 60; g2 clean -> artifact BoxF1 1.0, DetTypeF1 1.0, importance MAE 20.
    b@x: g1 a box elsewhere; g2 a box -> artifact BoxF1 0 (0 of 1 gold, 1 drawn), DetTypeF1 2*1/(2+1+0) = 0.667
    (g1 a true positive, g2 a false positive)."""
    gold = [{"image_id": "g1", "defects": [d([100, 100, 300, 300], desc="melted ear", imp=80)]},
            {"image_id": "g2", "defects": []}]  # fmt: skip
    cfg = AnnotateConfig(gold_file=_gold_store(tmp_path, gold), embedder="lexical", gold_min_tasks=2,
                         gold_bootstrap=200)  # fmt: skip
    tasks = [
        _task(1, "g1", [_ann(1, "a@x", _box(10, 10, 20, 20, 60)), _ann(2, "b@x", _box(70, 70, 10, 10, 60))]),
        _task(2, "g2", [_ann(3, "a@x", []), _ann(4, "b@x", _box(5, 5, 10, 10, 20))]),
        _task(3, "o1", [_ann(5, "a@x", _box(10, 10, 20, 20, 60))]),
    ]
    out = convert_export(tasks, cfg)
    assert [r.image_id for r in out["records"]] == ["o1"] and [r.image_id for r in out["all"]] == ["o1"]
    assert out["counts"]["gold_annotations"] == 4 and out["counts"]["valid"] == 5
    from annotation.gold import gold_scores
    from sdg_data.scoring.embedding import load_embedder

    s = gold_scores(out["gold_reference"], out["gold"], cfg, load_embedder("lexical"))
    a, b = s["a@x"], s["b@x"]
    assert a["tasks"] == b["tasks"] == 2
    assert a["artifact"]["BoxF1@0.5"]["value"] == 1.0 and a["artifact"]["DetTypeF1"]["value"] == 1.0
    assert a["importance_mae"] == 20 and a["artifact"]["DescCos@0.1"]["value"] == pytest.approx(1.0)
    assert b["artifact"]["BoxF1@0.5"]["value"] == 0.0
    assert b["artifact"]["DetTypeF1"]["value"] == pytest.approx(2 / 3)
    assert a["score"] == 1.0 and b["score"] == 0.0  # misalignment has no gold box: not in the score
    assert not a["flagged"] and b["flagged"]  # 2 tasks >= gold_min_tasks, 0.0 < 0.3
    lo, hi = a["artifact"]["BoxF1@0.5"]["ci95"]
    assert lo == hi == 1.0
    lo, hi = b["artifact"]["DetTypeF1"]["ci95"]
    assert 0 <= lo <= 2 / 3 <= hi <= 1


def test_a_gold_file_given_but_unusable_is_an_error_not_no_gold(tmp_path):
    import os

    task = [_task(1, "g1", [_ann(1, "a@x", [])])]
    for bad in (tmp_path / "missing.jsonl", tmp_path):
        with pytest.raises(ValueError, match="gold_file"):
            convert_export(task, AnnotateConfig(gold_file=str(bad)))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        convert_export(task, AnnotateConfig(gold_file=str(fifo)))
    mixed = _gold_store(tmp_path, [{"image_id": "g1", "defects": []}, {"image_id": "g2", "defects": None}])
    with pytest.raises(ValueError, match="not annotated .e.g. g2"):
        convert_export(task, AnnotateConfig(gold_file=mixed))
    (tmp_path / "empty.jsonl").write_text("")
    assert convert_export(task, AnnotateConfig(gold_file=str(tmp_path / "empty.jsonl")))["counts"]["valid"] == 1


def test_a_gold_record_whose_id_or_file_name_says_gold_is_refused():
    from annotation.gold import telltale

    assert telltale(ImageRecord.from_json({"image_id": "gold-7", "defects": []}))
    assert telltale(ImageRecord.from_json({"image_id": "x", "image_path": "sets/Honeypot_3.png", "defects": []}))
    assert telltale(ImageRecord.from_json({"image_id": "x", "image_path": "gold/x.png", "defects": []})) is None


# ------------------------------------------------------------------ queue places and gold spacing
def test_queue_places_order_by_uncertainty_and_spread_gold():
    from annotation.queue import PLACE, queue_places, spacing

    assert spacing(0.05, 10, 1) == 190 and spacing(0.05, 1, 1) == 19 and spacing(0.5, 3, 3) == 1
    assert spacing(0.05, 3, 5) == spacing(0.05, 3, 3) == 19  # an overlap above the team is the whole team
    tasks = {f"t{k}": k + 1 for k in range(6)} | {"g1": 10, "g2": 11}
    pri = {"t3": 0.9, "t1": 0.5, "t5": 0.5}
    places = queue_places(tasks, pri, {"g1", "g2"}, every=2)
    order = [i for i, _ in sorted(((i, places[t]) for i, t in tasks.items()), key=lambda x: x[1])]
    assert order == ["t3", "t1", "g1", "t5", "t0", "g2", "t2", "t4"]
    assert sorted(places.values()) == [k * PLACE for k in range(8)]  # consecutive: a gold place is not odd
    # more gold than slots: the rest go to the end
    places = queue_places({"t0": 1, "g1": 2, "g2": 3}, None, {"g1", "g2"}, every=5)
    assert sorted(places, key=places.get) == [1, 2, 3]


def test_read_order_takes_uncertainty_or_samples_and_rejects_the_rest(tmp_path):
    from annotation.queue import read_order

    box = {"box_2d": [0, 0, 100, 100], "label": "artifact", "description": "x", "importance": 5}
    lines = [
        {"image_id": "a", "uncertainty": 0.25},
        {"image_id": "b", "samples": [{"defects": [box]}, {"defects": []}]},
        {"image_id": "c", "uncertainty": 7},
        {"uncertainty": 0.1},
        {"image_id": "a", "uncertainty": 0.9},
        {"image_id": 12, "uncertainty": 0.9},
        {"image_id": "e", "samples": [1, 2]},
    ]
    p = tmp_path / "u.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in lines) + "not json\n")
    pri, rejects, n = read_order(p)
    assert pri == {"a": 0.25, "b": 1.0} and n == 8 and len(rejects) == 6  # every line counted once
    why = {r.line: r.reason for r in rejects}
    assert "uncertainty" in why[3] and why[4] == "image_id: missing" and "line 1, which is kept" in why[5]
    assert why[6] == "image_id: must be text, got int" and why[7].startswith("samples[0]: must be an object")
    assert 8 in why


# ------------------------------------------------------------------ escalation's decisions
def test_escalation_plans_one_more_annotator_below_the_threshold_up_to_the_maximum():
    from annotation.escalate import plan

    box = [d([0, 0, 100, 100])]
    far = [d([500, 500, 600, 600])]
    recs = [rec("a@x", box, "agree"), rec("b@x", box, "agree"),
            rec("a@x", box, "split"), rec("b@x", far, "split"),
            rec("a@x", box, "full"), rec("b@x", far, "full"), rec("c@x", [], "full"),
            rec("a@x", box, "gold1"), rec("b@x", far, "gold1"), rec("a@x", box, "alone")]  # fmt: skip
    rows = {r["image_id"]: r for r in plan(recs, 0.5, 3, {"gold1"})}
    assert set(rows) == {"agree", "split", "full"}  # gold and single-annotator tasks are not compared
    assert not rows["agree"]["escalate"] and rows["agree"]["agreement"] == 1.0
    assert rows["split"]["escalate"] and rows["split"]["new_overlap"] == 3 and rows["split"]["agreement"] == 0.0
    assert not rows["full"]["escalate"] and "already 3 annotators" in rows["full"]["why"]


# ------------------------------------------------------------------ the detector's samples
def test_sample_disagreement_is_zero_when_samples_agree_and_one_when_none_do():
    from sdg_data.records import Defect
    from sdg_data.scoring.uncertainty import box_f1, disagreement

    a = Defect.from_json(d([0, 0, 100, 100]))
    b = Defect.from_json(d([0, 0, 100, 104]))
    c = Defect.from_json(d([600, 600, 700, 700]))
    assert disagreement([[a], [b], [a]]) == 0.0 and disagreement([[a], [c]]) == 1.0
    assert disagreement([[], []]) == 0.0 and disagreement([[a]]) == 0.0
    assert box_f1([a, c], [b]) == pytest.approx(2 / 3)
    assert disagreement([[a], [b], [c]]) == pytest.approx(1 - (1 + 0 + 0) / 3)


# ------------------------------------------------------------------ agreement's added figures
def test_agreement_adds_description_cosine_and_each_annotator_against_the_others_consensus():
    from annotation.agreement import agreement
    from sdg_data.scoring.embedding import load_embedder

    box = lambda desc: [d([0, 0, 100, 100], desc=desc)]  # noqa: E731
    recs = [rec("a@x", box("six fingers"), "1"), rec("b@x", box("six fingers"), "1"), rec("c@x", [], "1"),
            rec("a@x", box("x"), "2"), rec("b@x", box("x"), "2"), rec("c@x", box("x"), "2")]  # fmt: skip
    rep = agreement(recs, embedder=load_embedder("lexical"))
    assert rep["pairs"]["a@x | b@x"]["artifact"]["DescCos@0.1"] == pytest.approx(1.0)
    vs = rep["versus_consensus"]
    # a against the consensus of b and c: on image 1 b drew a box and c none: no verdict, so image 1 is not a's
    # reference (it would be a clean one otherwise). Image 2: b and c agree -> a matches.
    a = vs["a@x"]["artifact"]
    assert vs["a@x"]["images"] == 1 and a["BoxF1@0.5"] == 1.0 and a["DetTypeF1"] == 1.0
    # c against a and b: image 1's reference has the box (2 of 2) and c is clean -> a miss; image 2 a match:
    # BoxF1 2*1/(2+1), DetTypeF1 2*1/(2*1+1)
    c = vs["c@x"]["artifact"]
    assert c["BoxF1@0.5"] == pytest.approx(2 / 3) and c["DetTypeF1"] == pytest.approx(2 / 3)


# ------------------------------------------------------------------ sdg detect --samples K, against a loopback server
def test_detect_samples_write_each_answer_and_their_disagreement_which_push_order_reads(tmp_path):
    from PIL import Image

    from annotation.queue import read_order
    from distill.fake_teacher import FakeTeacher, FakeTeacherServer
    from train.detector.detect import DetectConfig, detect

    rows = []
    for iid in ("steady", "unsure"):
        Image.new("RGB", (64, 64), (90, 90, 90)).save(tmp_path / f"{iid}.png")
        rows.append({"image_id": iid, "image_path": f"{iid}.png", "caption": "a cat", "defects": []})
    src = tmp_path / "records.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    calls: dict[str, int] = {}

    def answer(body, iid):
        """The steady image gets the same box every time; the unsure one a box that jumps across the image."""
        k = calls[iid] = calls.get(iid, 0) + 1
        x = 100 if iid == "steady" or k % 2 else 700
        box = {"box_2d": [x, 100, x + 200, 300], "label": "artifact", "description": "d", "importance": 5}
        return f"<think>x</think><answer>{json.dumps([box])}</answer>"

    with FakeTeacherServer(FakeTeacher(responder=answer)) as srv:
        cfg = DetectConfig(backend="openai", base_url=srv.base_url, model="m", progress=False, max_retries=0,
                           samples=4, temperature=0.7)  # fmt: skip
        s = detect(src, tmp_path / "det", cfg)
    assert s["predicted"] == 2 and calls == {"steady": 4, "unsure": 4}
    lines = (tmp_path / "det" / "predictions.jsonl").read_text().splitlines()
    got = {r["image_id"]: r for r in map(json.loads, lines)}
    assert len(got["unsure"]["samples"]) == 4 and got["steady"]["uncertainty"] == 0.0
    # two answers at x=100 and two at x=700: of the 6 pairs, 2 agree -> 1 - 2/6
    assert got["unsure"]["uncertainty"] == pytest.approx(1 - 2 / 6, abs=1e-4)
    pri, rejects, n = read_order(tmp_path / "det" / "predictions.jsonl")
    assert pri == {"steady": 0.0, "unsure": pytest.approx(2 / 3, abs=1e-4)} and not rejects and n == 2
    with pytest.raises(ValueError, match="--temperature > 0"):
        DetectConfig(samples=3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_on_the_demos_simulated_team_consensus_keeps_fewer_wrong_boxes_than_the_earliest_annotation(seed):
    """Three simulated annotators (good, fair, weak) on the demo sample; both policies scored against the sample's
    own labels. The weak annotator's stray boxes reach the records whenever theirs is the earliest annotation; a
    majority of the three almost never draws them."""
    from annotation.simteam import simulate_export
    from sdg_data.io.truth import load_ground_truth
    from sdg_data.scoring.evaluation import evaluate
    from tests.lskit import ROOT

    refs = load_ground_truth(ROOT / "sdg_data" / "demo" / "sample" / "records.jsonl").records
    tasks = simulate_export(refs, seed=seed)
    precision = {}
    for policy in ("primary", "consensus"):
        cfg = AnnotateConfig(consolidation=policy, embedder="lexical", work_dir="/nonexistent")
        recs = convert_export(tasks, cfg)["records"]
        counts = evaluate(refs, {r.image_id: r.defects for r in recs})["counts"]
        matched = sum(counts[lab]["matched@0.5"] for lab in ("artifact", "misalignment"))
        precision[policy] = matched / sum(counts[lab]["pred_boxes"] for lab in ("artifact", "misalignment"))
    assert precision["consensus"] > precision["primary"] + 0.15, precision


def test_consensus_work_is_bounded_and_what_it_leaves_out_is_said():
    from annotation.consensus import MAX_VOTERS

    box = [d([0, 0, 100, 100])]
    by_who = {f"a{k:02d}@x": rec(f"a{k:02d}@x", box, created=f"2026-12-01T00:00:{k:02d}Z") for k in range(25)}
    flood = [d([i % 900, 0, i % 900 + 50, 50]) for i in range(400)]
    by_who["flood@x"] = rec("flood@x", flood, created="2026-11-01T00:00:00Z")
    out = consensus_record(by_who)
    c = out.provenance["consolidation"]
    assert len(c["annotators"]) == MAX_VOTERS == 20 and "flood@x" not in c["annotators"]
    why = {x["annotator"]: x["why"] for x in c["left_out"]}
    assert why["flood@x"] == "400 boxes, more than 300" and len(why) == 1 + 5
    assert "a24@x" in why and "a00@x" not in why  # the earliest 20 vote
    (m,) = out.defects
    assert m.provenance["votes"] == 20
