"""The annotation round trip as a lead runs it from the README, on a real Label Studio: predict changes nothing it
was not asked to and can be rerun, the image root comes from the server, nothing done is not success, and status
says what prefill is worth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from annotation.config import AnnotateConfig
from annotation.uiform import ui_region
from tests.lskit import TOKEN, needs_server, samples


def _invoke(*args: str):
    from sdg_data.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture()
def lead(ls_server, monkeypatch, tmp_path, request):
    """A recipe as a lead writes it: the server's URL and a project title, no image root (the server has it)."""
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    monkeypatch.chdir(tmp_path)  # outputs without --out land under the working folder, never beside the input
    cfg: AnnotateConfig = ls_server["cfg"]
    recipe = tmp_path / "lead.yaml"
    title = f"rt-{request.node.name}"[:50]
    recipe.write_text(f"url: {cfg.url}\nproject_title: {title}\nmax_retries: 1\nbackoff_base_s: 0.05\n")
    return {"recipe": recipe, "images": ls_server["images"], "cfg": cfg, "title": title}


def _conn(lead):
    from annotation.client import Connection, require_project

    cfg = AnnotateConfig(**{**lead["cfg"].__dict__, "project_title": lead["title"]})
    conn = Connection(cfg)
    return conn, require_project(conn)


def _pushed(lead, n: int, tag: str):
    """n 100 px images pushed through the CLI as the lead does (no --image-root); the records file, a connection,
    the project and image id -> task id."""
    from annotation.push import server_tasks

    src, _ = samples(lead["images"], n, f"{tag}-{lead['title'][-6:]}", size=(100, 100))
    assert _invoke("annotate", "push", src, "--config", lead["recipe"]).exit_code == 0
    conn, project = _conn(lead)
    return src, conn, project, server_tasks(conn, project.id)


def _response(*boxes: tuple[list[int], str, int]) -> str:
    items = [{"box_2d": b, "label": lab, "description": f"{lab} at {b}", "importance": imp} for b, lab, imp in boxes]
    return f"<think>checked</think><answer>{json.dumps(items)}</answer>"


def _predictions(conn, project_id: int) -> list[dict]:
    from annotation.predictions import project_predictions

    out = []
    for version in ("det-v1", "det-v2"):
        out += [p for ps in project_predictions(conn, project_id, version).values() for p in ps]
    return out


@needs_server
def test_predict_keeps_the_settings_and_a_rerun_never_duplicates(lead, tmp_path):
    recipe, images = lead["recipe"], lead["images"]
    guide = tmp_path / "team-guidelines.md"
    guide.write_text("# Our team's rules\n\nBox the whole hand.\n")
    r = _invoke(
        "annotate", "init", "--config", recipe, "--image-root", images, "--overlap", "2", "--guidelines", guide
    )
    assert r.exit_code == 0, r.output
    src, _ = samples(images, 3, f"rt-{lead['title'][-6:]}", size=(100, 100))
    r = _invoke("annotate", "push", src, "--config", recipe)  # no --image-root: the project's storage has it
    assert r.exit_code == 0 and "created 3" in r.output, r.output
    assert not list(src.parent.glob(f"{src.stem}.push.*")), "push wrote beside its input"
    assert (tmp_path / "outputs" / "annotate" / f"{src.stem}.push.summary.json").exists()
    ids = [json.loads(x)["image_id"] for x in src.read_text().splitlines()]

    preds = tmp_path / "preds.jsonl"

    def write_preds(imp: int) -> None:
        rows = [
            {"image_id": ids[0], "response": _response(([100, 100, 300, 300], "artifact", imp))},
            {"image_id": ids[1], "response": _response(([500, 500, 900, 900], "misalignment", 40))},
            {"image_id": "not-a-task", "response": _response(([0, 0, 10, 10], "artifact", 5))},
        ]
        preds.write_text("".join(json.dumps(x) + "\n" for x in rows))

    write_preds(60)
    conn, project = _conn(lead)
    before = {k: getattr(project, k, None) for k in ("maximum_annotations",)}
    instruction = conn.client.projects.get(id=project.id).expert_instruction
    assert "Box the whole hand" in instruction

    def predict(version: str) -> dict:
        r = _invoke("annotate", "predict", preds, "--model-version", version, "--config", recipe)
        assert r.exit_code == 0, r.output
        return json.loads((tmp_path / "outputs" / "annotate" / "preds.predict.summary.json").read_text())

    s = predict("det-v1")
    assert (s["created"], s["replaced"], s["unchanged"], s["rejected"]) == (2, 0, 0, 1)
    s = predict("det-v1")  # the same run again: nothing new on the server
    assert (s["created"], s["replaced"], s["unchanged"]) == (0, 0, 2)
    write_preds(75)  # one box's importance changed
    s = predict("det-v1")
    assert (s["created"], s["replaced"], s["unchanged"]) == (0, 1, 1)
    preds_v1 = _predictions(conn, project.id)
    assert len(preds_v1) == 2 and len({p["task"] for p in preds_v1}) == 2  # one per task, never a second tab
    changed = next(p for p in preds_v1 if any(r.get("value", {}).get("number") == 75 for r in p["result"]))
    # a repeat left by an older version of predict is cleaned up by the next run
    conn.client.projects.import_predictions(
        id=project.id, request=[{"task": changed["task"], "model_version": "det-v1", "result": changed["result"]}]
    )
    s = predict("det-v1")
    assert (s["unchanged"], s["repeats_removed"]) == (2, 1)
    s = predict("det-v2")
    assert s["created"] == 2 and s["model_version_shown"] == "det-v2"
    after = conn.client.projects.get(id=project.id)
    assert after.model_version == "det-v2"
    assert {k: getattr(after, k, None) for k in before} == before == {"maximum_annotations": 2}
    assert after.expert_instruction == instruction  # guidelines untouched
    assert len(_predictions(conn, project.id)) == 4


@needs_server
def test_pull_and_status_read_the_image_root_from_the_server_and_count_prefill(lead, tmp_path):
    recipe, images = lead["recipe"], lead["images"]
    assert _invoke("annotate", "init", "--config", recipe, "--image-root", images).exit_code == 0
    src, conn, project, tasks = _pushed(lead, 4, "pf")
    ids = [json.loads(x)["image_id"] for x in src.read_text().splitlines()]
    preds = tmp_path / "p.jsonl"
    boxes = (([100, 100, 300, 300], "artifact", 60), ([500, 500, 900, 900], "misalignment", 40))
    preds.write_text("".join(json.dumps({"image_id": i, "response": _response(*boxes)}) + "\n" for i in ids[:3]))
    assert _invoke("annotate", "predict", preds, "--model-version", "det-v1", "--config", recipe).exit_code == 0
    preds_by_task = {p["task"]: p for p in _predictions(conn, project.id)}

    def regions(task_id: int) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for r in preds_by_task[task_id]["result"]:
            out.setdefault(r["id"], []).append({**r, "original_width": 100, "original_height": 100})
        return out

    # task 0: submitted as prefilled; task 1: box 1 moved, box 0 deleted, one added by hand; task 3: no prefill
    t0, t1 = tasks[ids[0]], tasks[ids[1]]
    kept = [r for rs in regions(t0).values() for r in rs]
    conn.client.annotations.create(id=t0, result=kept, parent_prediction=preds_by_task[t0]["id"], lead_time=10.0)
    moved = ui_region("pred-1", "misalignment", 40, 50, 45, 40, "the shirt is red", 45, 100, 100, "prediction-changed")
    added = ui_region("hand-1", "artifact", 5, 5, 10, 10, "a sixth finger", 70, 100, 100)
    conn.client.annotations.create(
        id=t1, result=moved + added, parent_prediction=preds_by_task[t1]["id"], lead_time=30.0
    )
    conn.client.annotations.create(id=tasks[ids[3]], result=[], lead_time=50.0)

    out = tmp_path / "work" / "ann.jsonl"
    r = _invoke("annotate", "pull", "--out", out, "--config", recipe)  # no --image-root anywhere
    assert r.exit_code == 0 and "3 valid, 0 rejected" in r.output, r.output
    recs = _lines(out)
    assert len(recs) == 3 and all(Path(x["image_path"]).is_file() for x in recs)

    r = _invoke("annotate", "status", "--config", recipe, "--out", tmp_path / "status.json")
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "status.json").read_text())
    assert s["rejected_annotations"] == 0
    v1 = s["prefill"]["versions"]["det-v1"]
    assert (v1["annotations"], v1["predicted_boxes"], v1["kept"], v1["moved"], v1["deleted"], v1["added"]) == (
        2, 4, 2, 1, 1, 1,
    )  # fmt: skip
    assert v1["unchanged_share"] == 0.5 and v1["median_lead_time_s"] == 20.0
    assert s["prefill"]["without_prefill"] == {"annotations": 1, "median_lead_time_s": 50.0}
    assert "prefill by model version" in r.output and "det-v1" in r.output


@needs_server
def test_nothing_kept_exits_non_zero_with_the_top_reasons(lead, tmp_path):
    recipe, images = lead["recipe"], lead["images"]
    assert _invoke("annotate", "init", "--config", recipe, "--image-root", images).exit_code == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"image_id": "a", "image_path": "nowhere/a.png", "caption": "x"}\n'
        '{"image_id": "b", "image_path": "../../etc/passwd", "caption": "x"}\n{oops\n'
    )
    r = _invoke("annotate", "push", bad, "--config", recipe)
    assert r.exit_code != 0 and "kept 0 of 3" in r.output and "top reasons" in r.output, r.output
    assert "push.rejects.jsonl" in r.output
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    r = _invoke("annotate", "push", empty, "--config", recipe)
    assert r.exit_code != 0 and "read 0" in r.output, r.output
    r = _invoke("annotate", "pull", "--out", tmp_path / "none.jsonl", "--config", recipe)
    assert r.exit_code == 0 and "no annotations yet" in r.output, r.output  # nothing to pull yet is not an error

    _, conn, project, tasks = _pushed(lead, 1, "nk")
    tid = next(iter(tasks.values()))
    conn.client.annotations.create(id=tid, result=ui_region("r", "artifact", 5, 5, 10, 10, "x", 150, 100, 100))
    r = _invoke("annotate", "pull", "--out", tmp_path / "p.jsonl", "--config", recipe)
    assert r.exit_code != 0 and "kept 0 of 1 annotations" in r.output and "importance 150" in r.output, r.output


@needs_server
def test_pull_of_an_export_from_another_machine_names_the_folder_it_needs(lead, tmp_path):
    from annotation.pull import export_tasks

    recipe, images = lead["recipe"], lead["images"]
    assert _invoke("annotate", "init", "--config", recipe, "--image-root", images).exit_code == 0
    _, conn, project, tasks = _pushed(lead, 1, "ex")
    tid = next(iter(tasks.values()))
    conn.client.annotations.create(
        id=tid, result=ui_region("r", "artifact", 5, 5, 10, 10, "a bent fork", 50, 100, 100)
    )
    export = tmp_path / "export.json"
    export.write_text(json.dumps(export_tasks(conn, project.id)))
    offline = tmp_path / "offline.yaml"
    offline.write_text(f"project_title: {lead['title']}\ndata_dir: {tmp_path / 'no-server'}\n")
    r = _invoke("annotate", "pull", "--from-export", export, "--out", tmp_path / "a.jsonl", "--config", offline)
    assert r.exit_code != 0 and f"a folder named {images.name!r}" in r.output and "--image-root" in r.output, r.output
    elsewhere = tmp_path / "copy" / images.name
    elsewhere.mkdir(parents=True)
    r = _invoke("annotate", "pull", "--from-export", export, "--out", tmp_path / "b.jsonl", "--config", offline,
                "--image-root", elsewhere)  # fmt: skip
    assert r.exit_code == 0 and "1 valid" in r.output and "warning: 1 image(s)" in r.output, r.output
    assert f"a folder named {images.name!r}" in r.output


def test_agreement_with_one_annotator_says_it_needs_two(tmp_path):
    from sdg_data.records import ImageRecord

    rec = ImageRecord.from_json(
        {"image_id": "a", "defects": [], "provenance": {"annotator": "ann@x", "annotation_id": 1}}
    ).to_json()
    path = tmp_path / "a.all.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    r = _invoke("annotate", "agreement", path)
    assert r.exit_code != 0 and "two or more annotators" in r.output and "ann@x" in r.output, r.output
