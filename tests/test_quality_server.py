"""Annotation quality on the real server, with simulated annotators in their own sessions: gold tasks hidden among the
others, handed to everyone, spread through the queue, scored and kept out of pull; the queue following a detector's
uncertainty; escalation giving a disputed task to one more annotator.

A server of its own (a copy of the cached data folder): Label Studio hands out one of the (team + 1) lowest places
at random, the team being every account of the organisation, so the order is checked with a known team.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from annotation.config import AnnotateConfig
from annotation.uiform import ui_region
from tests.lskit import ADMIN, TOKEN, _server, _stop_all, needs_server, samples


pytestmark = needs_server
PASSWORD = "A-long-password-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from annotation import server as ls

    _, images, cfg = _server(tmp_path_factory, "quality")
    proc = ls.start_from_cache(cfg, TOKEN, ls.default_cache(TOKEN), env={**os.environ, **ADMIN})
    yield {"cfg": cfg, "images": images}
    _stop_all(proc, cfg)


def _cfg(server, tmp_path, title: str, **kw) -> AnnotateConfig:
    base = {**server["cfg"].__dict__, "project_title": title, "work_dir": str(tmp_path / "work")}
    return AnnotateConfig(**{**base, "embedder": "lexical", "gold_bootstrap": 200, **kw})


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _work(session, project_id: int, answer) -> list[str]:
    """Take tasks from the label stream until it is empty, answering each with ``answer(task)``; returns the
    image ids in the order the server handed them out."""
    seen = []
    while True:
        r = session.get(f"/api/projects/{project_id}/next")
        if r.status_code == 404:
            return seen
        assert r.status_code == 200, r.text[:200]
        task = r.json()
        seen.append(task["data"]["image_id"])
        body = {"result": answer(task), "lead_time": 5.0}
        posted = session.post(f"/api/tasks/{task['id']}/annotations/?project={project_id}", json=body)
        assert posted.status_code == 201, posted.text[:200]


GOLD_BOX = {"box_2d": [100, 100, 300, 300], "label": "artifact", "description": "melted ear", "importance": 80}


def _perfect(task):
    """The gold box in the editor's form (10%, 10%, 20% x 20% of a 120 x 80 image)."""
    return ui_region("g", "artifact", 10, 10, 20, 20, "melted ear", 60, 120, 80)


def _wrong(task):
    return ui_region("w", "misalignment", 60, 60, 30, 30, "a dog", 20, 120, 80)


def test_gold_is_hidden_mixed_scored_and_kept_out_and_the_queue_follows_uncertainty(server, monkeypatch, tmp_path):
    from annotation.client import Connection, ensure_project
    from annotation.gold import GOLD_OVERLAP
    from annotation.pull import pull
    from annotation.push import push, server_tasks
    from annotation.queue import add_gold, order_queue
    from annotation.status import format_status, status
    from annotation.testkit import invite_link, join

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    cfg = _cfg(server, tmp_path, "sdg-gold", overlap=1, team_size=1, gold_share=0.25, gold_min_tasks=2)
    conn = Connection(cfg)
    project, _ = ensure_project(conn)
    _, lines = samples(server["images"], 14, "gq")
    ordinary, gold = lines[:12], lines[12:]
    push(_write(server["images"] / "gq-ordinary.jsonl", ordinary), conn, tmp_path)
    # the detector's uncertainty: gq-11 the least sure, then gq-10, ...; gq-0..2 have none (they go last)
    order = _write(tmp_path / "u.jsonl", [{"image_id": f"gq-{i}", "uncertainty": i / 20} for i in range(3, 12)])
    q = order_queue(conn, order)
    assert (q["prioritised"], q["tasks"], q["gold"]) == (9, 12, 0)
    for g in gold:
        g["defects"] = [GOLD_BOX]
    s = add_gold(conn, _write(server["images"] / "gq-g.jsonl", gold))
    assert s["gold_added"] == 2 and s["queue"]["gold_every"] == 3  # (1 - 0.25) / 0.25 x 1 annotator / overlap 1
    tasks = server_tasks(conn, project.id)

    # what annotators can read of a task: the same fields, the same URL form, the same meta; no prediction of its own
    link = invite_link(cfg.url, TOKEN)
    a = join(cfg.url, link, "gold-a@sdg.test", PASSWORD)
    b = join(cfg.url, link, "gold-b@sdg.test", PASSWORD)
    seen = {i: a.get(f"/api/tasks/{tasks[i]}").json() for i in ("gq-0", "gq-12")}
    o, g = seen["gq-0"], seen["gq-12"]
    assert set(o["data"]) == set(g["data"]) and set(o["meta"]) == set(g["meta"])
    assert o["meta"]["labeling"] == g["meta"]["labeling"]
    assert o["data"]["image"].rsplit("/", 1)[0] == g["data"]["image"].rsplit("/", 1)[0]
    assert "gold" not in json.dumps(g).lower() and g["overlap"] == GOLD_OVERLAP
    assert len(o["predictions"]) == len(g["predictions"]) == 1 and g["predictions"][0]["result"] == []

    # A alone in the stream (team of 1): the most uncertain first, a gold task after every 3 ordinary ones
    got_a = _work(a, project.id, lambda t: _perfect(t) if t["data"]["image_id"] in ("gq-12", "gq-13") else [])
    want = ["gq-11", "gq-10", "gq-9", "gq-12", "gq-8", "gq-7", "gq-6", "gq-13", "gq-5", "gq-4", "gq-3", "gq-0",
            "gq-1", "gq-2"]  # fmt: skip
    # the server picks at random among the (team + 1) lowest open places; the team here is the organisation
    team = len(conn.client.users.list())
    assert sorted(got_a) == sorted(want)
    if team <= 3:  # admin, A and B: each pick among the 4 lowest open places
        places = {iid: k for k, iid in enumerate(want)}
        for k, iid in enumerate(got_a):
            open_ = sorted(places[x] for x in want if x not in got_a[:k])
            assert places[iid] in open_[: team + 1], (k, iid, got_a)
    # B finds only the gold tasks (every ordinary one is done; gold goes to everyone)
    got_b = _work(b, project.id, _wrong)
    assert sorted(got_b) == ["gq-12", "gq-13"]

    st = status(conn, cfg)
    g = st["gold"]
    assert g["gold_tasks"] == 2 and g["annotations"] == 4 and g["flagged"] == ["gold-b@sdg.test"]
    sa, sb = g["annotators"]["gold-a@sdg.test"], g["annotators"]["gold-b@sdg.test"]
    assert sa["tasks"] == sb["tasks"] == 2 and sa["score"] == 1.0 and sb["score"] == 0.0
    assert sa["importance_mae"] == 20.0 and sa["artifact"]["DescCos@0.1"]["value"] == pytest.approx(1.0)
    assert sb["misalignment"]["DetTypeF1"]["value"] == 0.0  # two false positives, no gold misalignment
    text = format_status(st)
    assert "gold-b@sdg.test" in text and "FLAGGED" in text and "1.00 [1.00-1.00]" in text

    out = tmp_path / "pulled.jsonl"
    summary = pull(conn, out)
    ids = {json.loads(x)["image_id"] for x in out.read_text().splitlines()}
    assert ids == {f"gq-{i}" for i in range(12)} and summary["gold_annotations"] == 4
    gold_rows = [json.loads(x) for x in (tmp_path / "pulled.gold.jsonl").read_text().splitlines()]
    assert len(gold_rows) == 4 and {r["image_id"] for r in gold_rows} == {"gq-12", "gq-13"}


def test_escalation_gives_a_disputed_task_to_one_more_annotator(server, monkeypatch, tmp_path):
    from annotation.client import Connection, ensure_project
    from annotation.escalate import escalate
    from annotation.push import push, server_tasks
    from annotation.testkit import invite_link, join

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    cfg = _cfg(server, tmp_path, "sdg-escalate", overlap=2, escalate_below=0.5, escalate_max=3)
    conn = Connection(cfg)
    project, _ = ensure_project(conn)
    path, _ = samples(server["images"], 3, "esc")
    push(path, conn, tmp_path)
    tasks = server_tasks(conn, project.id)
    link = invite_link(cfg.url, TOKEN)
    a, b, c = (join(cfg.url, link, f"esc-{k}@sdg.test", PASSWORD) for k in "abc")
    # a and b agree on esc-0 (the same box) and not on esc-1 and esc-2 (a box against a clean verdict)
    _work(a, project.id, _perfect)
    _work(b, project.id, lambda t: _perfect(t) if t["data"]["image_id"] == "esc-0" else [])
    assert c.get(f"/api/projects/{project.id}/next").status_code == 404  # every task has its 2 annotators
    dry = escalate(conn, tmp_path / "dry.jsonl", dry_run=True)
    assert dry["would_escalate"] == 2 and dry["escalated"] == 0
    assert c.get(f"/api/projects/{project.id}/next").status_code == 404  # a dry run changes nothing
    # the lead has meanwhile asked for 5 annotators on esc-2: escalation must not lower that to 3
    conn.get_json(
        "set overlap", f"api/tasks/{tasks['esc-2']}", method="PATCH", json={"overlap": 5, "is_labeled": False}
    )
    s = escalate(conn, tmp_path / "esc.jsonl")
    rows = {r["image_id"]: r for r in map(json.loads, (tmp_path / "esc.jsonl").read_text().splitlines())}
    assert s["escalated"] == 1 and rows["esc-1"]["escalate"] and not rows["esc-0"]["escalate"]
    assert rows["esc-1"]["new_overlap"] == 3 and rows["esc-1"]["task_id"] == tasks["esc-1"]
    assert not rows["esc-2"]["escalate"] and "already 5" in rows["esc-2"]["why"]
    assert conn.get_json("read", f"api/tasks/{tasks['esc-2']}")["overlap"] == 5
    time.sleep(0.2)
    # the server now hands esc-1 (and esc-2, which wants 5), to c; a and b, who did them, get nothing
    assert sorted(_work(c, project.id, lambda t: [])) == ["esc-1", "esc-2"]
    assert a.get(f"/api/projects/{project.id}/next").status_code == 404
    # three annotators now, at most 3: not escalated again, and the row says why
    again = escalate(conn, tmp_path / "again.jsonl")
    rows = {r["image_id"]: r for r in map(json.loads, (tmp_path / "again.jsonl").read_text().splitlines())}
    assert again["escalated"] == 0 and "already 3 annotators" in rows["esc-1"]["why"]


def test_the_queue_order_holds_with_a_prefill_and_carries_its_boxes(server, monkeypatch, tmp_path):
    """The usual workflow: a detector's prefill first (sdg annotate predict), then push --order. The tasks hold two
    model versions' predictions; the server still hands them out in the queue's order, and the annotator starts from
    the prefill's boxes (carried into the queue's predictions). A new prefill afterwards keeps the order."""
    from annotation.client import Connection, ensure_project, find_project
    from annotation.predict import predict
    from annotation.push import push, server_tasks
    from annotation.queue import order_queue
    from annotation.testkit import invite_link, join

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    cfg = _cfg(server, tmp_path, "sdg-prefill-order", overlap=1, team_size=1)
    conn = Connection(cfg)
    project, _ = ensure_project(conn)
    path, _ = samples(server["images"], 8, "pq")
    push(path, conn, tmp_path)
    box = {"box_2d": [100, 100, 300, 300], "label": "artifact", "description": "melted ear", "importance": 40}
    preds = _write(tmp_path / "p.jsonl", [{"image_id": f"pq-{i}", "defects": [box] * (i % 2)} for i in range(8)])
    predict(preds, conn, "det-v1", tmp_path)
    order_queue(conn, _write(tmp_path / "u.jsonl", [{"image_id": f"pq-{i}", "uncertainty": i / 10} for i in range(8)]))
    assert find_project(conn).model_version == "det-v1+queue"
    predict(preds, conn, "det-v2", tmp_path)  # a new prefill: the queue carries it, the order stays
    assert find_project(conn).model_version == "det-v2+queue"
    tasks = server_tasks(conn, project.id)
    a = join(cfg.url, invite_link(cfg.url, TOKEN), "prefill-a@sdg.test", PASSWORD)
    got = _work(a, project.id, lambda task: [])
    want = [f"pq-{i}" for i in range(7, -1, -1)]
    assert sorted(got) == sorted(want)
    team = len(conn.client.users.list())
    places = {iid: k for k, iid in enumerate(want)}
    for k, iid in enumerate(got):
        open_ = sorted(places[x] for x in want if x not in got[:k])
        assert places[iid] in open_[: team + 1], (k, iid, got)
    view = a.get(f"/api/tasks/{tasks['pq-1']}").json()["predictions"]
    queue = [p for p in view if p["model_version"] == "det-v2+queue"]
    assert len(queue) == 1 and len(queue[0]["result"]) == 3  # the prefill's box: rectangle, text, number
