"""A lead's tooling: per-annotator status, the disagreement list, and the review pass (pull --only-reviewed), on a
hand-checked export and against the real server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from annotation.config import AnnotateConfig
from annotation.lead import _active_hours, annotator_stats, disagreements, pair_agreement, parse_time
from annotation.pull import convert_export
from annotation.uiform import ui_region
from sdg_data.records import ImageRecord
from tests.lskit import TOKEN, needs_server, samples


def _box(rid, x, y, w, h, imp, label="artifact"):
    return ui_region(rid, label, x, y, w, h, "d", imp, 100, 100)


def _ann(aid, who, result, t, lead=30.0, **kw):
    return {"id": aid, "completed_by": {"id": who, "email": who}, "result": result, "created_at": t,
            "updated_at": t, "lead_time": lead, **kw}  # fmt: skip


def _task(tid, iid, anns):
    return {"id": tid, "data": {"image_id": iid, "caption": "c", "generator": "g", "seed": 1}, "annotations": anns}


def export() -> list[dict]:
    """Hand-made: ann@ and bob@ overlap on i1-i3; rev@ reviews i1. Times: ann works 09:00-09:10 (3 tasks) and
    after a 2-hour pause one more at 11:10; bob 09:00-09:04 and skips one.
    i1: ann box A (0,0,50,50) imp 80; bob the same box imp 60 -> F1 1.0, importance gap 20.
    i2: ann two boxes; bob one of them (IoU 1) -> F1 2*1/3 = 0.667.
    i3: ann clean; bob one box -> F1 0, verdicts differ.
    i4: ann alone."""
    return [
        _task(1, "i1", [_ann(1, "ann@x", _box("a", 0, 0, 50, 50, 80), "2026-11-30T09:00:00Z", 20),
                        _ann(2, "bob@x", _box("b", 0, 0, 50, 50, 60), "2026-11-30T09:00:00Z", 40),
                        _ann(3, "rev@x", _box("r", 0, 0, 40, 40, 70), "2026-11-30T12:00:00Z", 15)]),
        _task(2, "i2", [_ann(4, "ann@x", _box("a", 0, 0, 50, 50, 50) + _box("c", 60, 60, 20, 20, 10),
                             "2026-11-30T09:05:00Z", 40),
                        _ann(5, "bob@x", _box("b", 60, 60, 20, 20, 30), "2026-11-30T09:02:00Z", 60)]),
        _task(3, "i3", [_ann(6, "ann@x", [], "2026-11-30T09:10:00Z", 10),
                        _ann(7, "bob@x", _box("b", 10, 10, 10, 10, 5), "2026-11-30T09:04:00Z", 50)]),
        _task(4, "i4", [_ann(8, "ann@x", [], "2026-11-30T11:10:00Z", 30),
                        _ann(9, "bob@x", [], "2026-11-30T09:03:00Z", 5, was_cancelled=True)]),
    ]  # fmt: skip


def test_pair_agreement_is_symmetric_and_hand_checked():
    recs = {(r.image_id, r.provenance["annotator"]): r for r in convert_export(export(), AnnotateConfig())["all"]}
    a, b = recs[("i2", "ann@x")], recs[("i2", "bob@x")]
    assert pair_agreement(a, b)["box_f1"] == pytest.approx(2 / 3) == pair_agreement(b, a)["box_f1"]
    s = pair_agreement(recs[("i3", "ann@x")], recs[("i3", "bob@x")])
    assert s["box_f1"] == 0.0 and s["verdicts_differ"]
    clean = ImageRecord.from_json({"image_id": "z", "defects": []})
    assert pair_agreement(clean, clean)["box_f1"] == 1.0


def test_annotator_stats_on_the_hand_made_export():
    tasks = export()
    recs = convert_export(tasks, AnnotateConfig())["all"]
    s = annotator_stats(tasks, recs, {})
    ann, bob = s["ann@x"], s["bob@x"]
    assert (ann["annotations"], ann["skipped"], ann["skip_rate"]) == (4, 0, 0.0)
    assert (bob["annotations"], bob["skipped"], bob["skip_rate"]) == (3, 1, 0.25)
    # ann: median lead 25 s; sessions 09:00-09:10 (600 s + 25) and 11:10 (0 + 25) -> 650 s; 4 tasks / 0.1806 h
    assert ann["median_lead_time_s"] == 25.0 and ann["active_hours"] == pytest.approx(650 / 3600, abs=0.01)
    assert ann["tasks_per_hour"] == pytest.approx(4 / (650 / 3600), abs=0.1)
    assert ann["boxes_per_image"] == pytest.approx(3 / 4) and ann["clean_share"] == 0.5
    # ann overlaps bob on i1 (1.0), i2 (0.667), i3 (0.0); rev on i1 (IoU .64 -> matched: 1.0)
    assert ann["overlap_images"] == 4 and ann["agreement_box_f1"] == pytest.approx((1 + 2 / 3 + 0 + 1) / 4, abs=1e-3)
    assert ann["importance_mae"] == pytest.approx((20 + 20 + 10) / 3, abs=0.1)  # i1 bob, i2 bob, i1 rev
    assert s["rev@x"]["agreement_verdict"] == 1.0
    recent = annotator_stats(tasks, recs, {}, since=parse_time("2026-11-30T11:00:00Z"))
    assert recent["ann@x"]["annotations"] == 1 and "bob@x" not in recent and recent["rev@x"]["annotations"] == 1


def test_active_hours_split_sessions_at_long_pauses():
    t = [parse_time(x) for x in ("2026-11-30T09:00:00Z", "2026-11-30T09:19:00Z", "2026-11-30T10:00:00Z")]
    assert _active_hours(t, 60) == pytest.approx((19 * 60 + 60 + 60) / 3600)


def test_disagreements_put_the_most_disputed_first():
    rows = disagreements(convert_export(export(), AnnotateConfig())["all"], "http://h/projects/1/data?task={task_id}")
    assert [r["image_id"] for r in rows] == ["i3", "i2", "i1"]
    assert rows[0]["verdicts_differ"] and rows[0]["disagreement"] == 1.0
    assert rows[0]["annotators"] == {"ann@x": 0, "bob@x": 1} and rows[0]["url"] == "http://h/projects/1/data?task=3"
    assert rows[1]["disagreement"] == pytest.approx(1 / 3, abs=1e-3)


def test_only_reviewed_keeps_the_reviews_and_counts_the_rest(tmp_path):
    cfg = AnnotateConfig(reviewers=["rev@x"])
    res = convert_export(export(), cfg, only_reviewed=True)
    assert [r.image_id for r in res["records"]] == ["i1"] and res["counts"]["unreviewed_images"] == 3
    assert res["records"][0].provenance["annotator"] == "rev@x"
    with pytest.raises(ValueError, match="reviewers"):
        convert_export(export(), AnnotateConfig(), only_reviewed=True)
    # the CLI, offline from an export file
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export()))
    cli = [sys.executable, "-m", "sdg_data.cli", "annotate"]
    r = subprocess.run([*cli, "pull", "--from-export", str(path), "--out", str(tmp_path / "rev.jsonl"),
                        "--only-reviewed", "--reviewers", "rev@x", "--no-check-image-size"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0 and "3 not reviewed yet" in r.stdout, r.stderr[-1500:]
    assert len((tmp_path / "rev.jsonl").read_text().splitlines()) == 1
    r = subprocess.run([*cli, "status", "--from-export", str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "bob@x" in r.stdout and "25.0" in r.stdout, r.stderr[-1500:]
    r = subprocess.run([*cli, "disagreements", "--from-export", str(path), "--out", str(tmp_path / "d.jsonl")],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0 and r.stdout.splitlines()[1].startswith("1.00  i3"), r.stdout + r.stderr[-1500:]


@needs_server
def test_status_and_disagreements_on_the_real_server(ls_server, monkeypatch, tmp_path):
    """Two annotators join by the invite link and work through the label stream of an overlap-2 project in their
    own sessions; status counts them and the disagreement list links to the tasks."""
    import threading

    from annotation.client import Connection, ensure_project
    from annotation.push import push
    from annotation.status import disagreement_list, status
    from annotation.testkit import Annotator, invite_link, join

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    cfg = AnnotateConfig(**{**ls_server["cfg"].__dict__, "project_title": "sdg-lead-status", "overlap": 2})
    conn = Connection(cfg)
    project, _ = ensure_project(conn)
    path, _ = samples(ls_server["images"], 7, "lead")
    push(path, conn, tmp_path)
    link = invite_link(cfg.url, TOKEN)
    people = [Annotator(e, join(cfg.url, link, e, "A-long-password-1"), project.id, seed=i)
              for i, e in enumerate(["lead-a@sdg.test", "lead-b@sdg.test"])]  # fmt: skip
    stop = threading.Event()
    for p in people:
        p.work(stop, max_tasks=5)
        assert not p.errors, p.errors
    s = status(conn, cfg)
    assert (s["tasks"], s["annotated"], s["complete"], s["remaining"]) == (7, 5, 5, 2)  # 2 nobody opened yet
    assert s["rejected_annotations"] == 0  # checked as pull checks them: regions drawn on the image's real size
    for p in people:
        a = s["annotators"][p.email]
        assert a["annotations"] + a["skipped"] == 5 and 1 <= a["overlap_images"] <= a["annotations"]
    d = disagreement_list(conn, cfg, tmp_path / "d.jsonl", 3)
    assert d["overlap_images"] == len(_lines(tmp_path / "d.jsonl")) >= 1
    top = d["top"][0]
    assert top["url"].startswith(f"{cfg.url}/projects/{project.id}/data?tab=1&task=")


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]
