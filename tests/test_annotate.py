"""sdg annotate against a real Label Studio server (started here, stopped by pid), plus the export conversion,
consolidation and agreement on hand-made fixtures."""

from __future__ import annotations

import json
import os
import random
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from annotation.agreement import agreement
from annotation.config import AnnotateConfig, read_state
from annotation.pull import consolidate, convert_export
from annotation.server import ServerError, server_env
from annotation.uiform import ui_region
from sdg_data.records import ImageRecord
from tests.lskit import ADMIN, LS_BIN, TOKEN, needs_server, samples
from tests.lskit import free_port as _free_port
from tests.lskit import make_cfg as _cfg


_samples = samples


@pytest.fixture()
def conn(ls_server, monkeypatch, request):
    """A connection to a fresh project (its own title) per test."""
    from annotation.client import Connection, ensure_project

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    cfg = AnnotateConfig(**{**ls_server["cfg"].__dict__, "project_title": f"sdg-{request.node.name}"[:50]})
    c = Connection(cfg)
    ensure_project(c)
    return c


# ------------------------------------------------------------------ server and project
@needs_server
def test_server_starts_locked_down_from_a_cached_data_folder(ls_server):
    cfg = ls_server["cfg"]  # how long a start takes is measured by bench/bench_annotate.py, not asserted here
    env = server_env(cfg, TOKEN, base={})
    assert env["LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"] == "true" and env["SENTRY_DSN"] == ""
    assert env["LATEST_VERSION_CHECK"] == "false" and env["COLLECT_ANALYTICS"] == "false"
    assert env["LOCAL_FILES_DOCUMENT_ROOT"] == str(Path(cfg.image_root).resolve().parent)
    # sign-up without the invite link is refused (a well-formed form post with its CSRF token)
    import http.cookiejar
    import re
    import urllib.parse

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{cfg.url}/user/signup/", timeout=10).read().decode()
    csrf = re.search(r'csrfmiddlewaretoken" value="([^"]+)', page).group(1)
    form = urllib.parse.urlencode(
        {
            "csrfmiddlewaretoken": csrf,
            "email": "intruder@sdg.test",
            "password": "LongEnoughPassword1",
            "how_find_us": "x",
        }
    ).encode()
    req = urllib.request.Request(f"{cfg.url}/user/signup/", data=form, headers={"Referer": f"{cfg.url}/user/signup/"})
    with pytest.raises(urllib.error.HTTPError) as err:
        opener.open(req, timeout=10)
    assert err.value.code == 403
    from label_studio_sdk import LabelStudio

    emails = [u.email for u in LabelStudio(base_url=cfg.url, api_key=TOKEN).users.list()]
    assert "intruder@sdg.test" not in emails and ADMIN["LABEL_STUDIO_USERNAME"] in emails
    with pytest.raises(ServerError, match="POSTGRE_HOST"):
        server_env(AnnotateConfig(database="postgresql"), TOKEN, base={})


@needs_server
def test_init_is_idempotent_and_applies_the_config(conn):
    from annotation.client import ensure_project, find_project
    from annotation.labeling import LABEL_CONFIG, label_config

    conn.cfg.overlap = 2
    p1, created1 = ensure_project(conn)
    p2, created2 = ensure_project(conn)
    assert not created1 and not created2 and p1.id == p2.id == find_project(conn).id
    p = conn.client.projects.get(id=p1.id)
    assert p.maximum_annotations == 2 and p.label_config.strip() == LABEL_CONFIG.strip()
    assert ".lsf-sidepanels__wrapper" in p.label_config  # Label Studio's side panels give their width to the image
    conn.cfg.side_panels = True
    ensure_project(conn)
    kept = conn.client.projects.get(id=p1.id).label_config
    assert kept.strip() == label_config(side_panels=True).strip() and ".lsf-sidepanels__wrapper" not in kept
    conn.cfg.side_panels = False
    ensure_project(conn)
    assert "misalignment" in p.expert_instruction and "Shift+Enter" in p.expert_instruction
    storages = conn.client.import_storage.local.list(project=p1.id)
    assert len(storages) == 1 and Path(storages[0].path) == Path(conn.cfg.image_root).resolve()


@needs_server
def test_push_takes_a_built_dataset_and_serves_its_images(conn, ls_server, tmp_path):
    """A dataset folder is an input like a records file: its images are written under the image root (where the
    server can serve them) and pushed; a second push creates nothing."""
    from annotation.push import push, server_tasks
    from sdg_data.dataset.build import BuildConfig, build_dataset
    from tests.conftest import noise_records

    (tmp_path / "src").mkdir()
    src = noise_records(tmp_path / "src", n=3)
    for line in src.read_text().splitlines():
        assert json.loads(line)["image_path"]
    rows = [json.loads(x) for x in src.read_text().splitlines()]
    src.write_text("".join(json.dumps({**r, "image_id": f"dsp-{k}", "think": "### Step 1: a\n### Step 2: b\n"
                                             "### Step 3: c"}) + "\n" for k, r in enumerate(rows)))  # fmt: skip
    build_dataset(src, tmp_path / "dsp", BuildConfig(test_fraction=0.0), progress=False)
    first = push(tmp_path / "dsp", conn, tmp_path)
    again = push(tmp_path / "dsp", conn, tmp_path)
    assert first["created"] == 3 and again["created"] == 0 and again["already_on_server"] == 3
    served = Path(ls_server["images"]) / "dsp-images" / "images"
    assert sorted(p.name for p in served.iterdir()) == ["dsp-0.png", "dsp-1.png", "dsp-2.png"]
    data = conn.client.tasks.get(id=server_tasks(conn, _pid(conn))["dsp-1"]).data
    req = urllib.request.Request(conn.cfg.url + data["image"], headers={"Authorization": f"Token {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.read() == (served / "dsp-1.png").read_bytes()


@needs_server
def test_push_twice_creates_once_and_rejects_bad_paths(conn, ls_server, tmp_path):
    from annotation.push import push, server_tasks

    images = ls_server["images"]
    path, lines = _samples(images, 4, "push")
    outside = tmp_path / "outside.png"
    outside.write_bytes((images / "push" / "0.png").read_bytes())
    extra = [
        {"image_id": "push-0", "image_path": "push/1.png", "caption": "dup", "defects": []},
        {"image_id": "trav", "image_path": "../../etc/passwd", "caption": "x", "defects": []},
        {"image_id": "abs", "image_path": str(outside), "caption": "x", "defects": []},
        {"image_id": "gone", "image_path": "push/none.png", "caption": "x", "defects": []},
    ]
    with path.open("a") as f:
        f.write("".join(json.dumps(x) + "\n" for x in extra))
    first = push(path, conn, tmp_path)
    second = push(path, conn, tmp_path)
    assert (first["created"], first["rejected"], first["tasks_on_server"]) == (4, 4, 4)
    assert (second["created"], second["already_on_server"], second["tasks_on_server"]) == (0, 4, 4)
    rejects = [json.loads(x) for x in (tmp_path / "push.push.rejects.jsonl").read_text().splitlines()]
    reasons = {r["image_id"]: r["reason"] for r in rejects}
    assert "duplicate" in reasons["push-0"] and "outside the image root" in reasons["trav"]
    assert "outside the image root" in reasons["abs"] and "does not exist" in reasons["gone"]
    # the image is served to a logged-in client through the storage
    tasks = server_tasks(conn, _pid(conn))
    data = conn.client.tasks.get(id=tasks["push-0"]).data
    assert data["caption"] == "caption 0" and data["generator"] == "Z-Image-Turbo" and data["image_id"] == "push-0"
    req = urllib.request.Request(conn.cfg.url + data["image"], headers={"Authorization": f"Token {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.read() == (images / "push" / "0.png").read_bytes()


def _pid(conn) -> int:
    from annotation.client import require_project

    return require_project(conn).id


@needs_server
def test_ui_annotations_pull_to_the_expected_records(conn, ls_server, tmp_path):
    from annotation.pull import pull
    from annotation.push import push, server_tasks

    path, _ = _samples(ls_server["images"], 4, "pull", size=(200, 100))
    push(path, conn, tmp_path)
    tasks = server_tasks(conn, _pid(conn))
    c = conn.client
    res = ui_region("r1", "artifact", 10, 20, 30, 40, "six fingers on the left hand", 72, 200, 100) + ui_region(
        "r2", "misalignment", 50, 0, 50, 100, "the dog the prompt asks for is missing", 55, 200, 100
    )
    c.annotations.create(id=tasks["pull-0"], result=res, lead_time=31.5)
    c.annotations.create(id=tasks["pull-1"], result=[], lead_time=4.0)  # clean
    c.annotations.create(id=tasks["pull-2"], result=[], was_cancelled=True)  # skipped
    bad = ui_region("b1", "artifact", 10, 10, 10, 10, "fine", 150, 200, 100)  # importance out of range
    c.annotations.create(id=tasks["pull-3"], result=bad)
    s = pull(conn, tmp_path / "ann.jsonl")
    assert (s["annotations"], s["valid"], s["rejected"], s["cancelled"]) == (4, 2, 1, 1)
    recs = {r.image_id: r for r in map(ImageRecord.from_json, map(json.loads, (tmp_path / "ann.jsonl").open()))}
    assert set(recs) == {"pull-0", "pull-1"} and recs["pull-1"].defects == []
    d1, d2 = recs["pull-0"].defects
    assert (d1.label, d1.box.to_grid(), d1.description, d1.importance) == (
        "artifact",
        [100, 200, 400, 600],
        "six fingers on the left hand",
        72,
    )
    assert d1.box.to_pixels(200, 100) == [20.0, 20.0, 80.0, 60.0]
    assert (d2.box.to_grid(), d2.importance, d2.provenance["origin"]) == ([500, 0, 1000, 1000], 55, "manual")
    prov = recs["pull-0"].provenance
    assert prov["annotator"] == ADMIN["LABEL_STUDIO_USERNAME"] and prov["lead_time_s"] == 31.5
    assert prov["task_id"] == tasks["pull-0"] and prov["annotation_id"] and prov["updated_at"]
    assert (recs["pull-0"].width, recs["pull-0"].height) == (200, 100)
    line = json.loads((tmp_path / "ann.jsonl").read_text().splitlines()[0])
    assert line["defects"][0]["box_px"] == [20.0, 20.0, 80.0, 60.0]
    rej = json.loads((tmp_path / "ann.pull.rejects.jsonl").read_text())
    assert rej["image_id"] == "pull-3" and "importance 150 is outside 1-100" in rej["reason"]
    for f in tmp_path.iterdir():  # the token is never written
        assert TOKEN not in f.read_text()


@needs_server
def test_predictions_prefill_and_origins_come_back(conn, ls_server, tmp_path):
    from annotation.predict import predict
    from annotation.pull import pull
    from annotation.push import push, server_tasks

    path, _ = _samples(ls_server["images"], 3, "pred", size=(100, 100))
    push(path, conn, tmp_path)
    preds = [
        {
            "image_id": "pred-0",
            "response": "<think>two problems</think><answer>["
            '{"box_2d": [100, 100, 300, 300], "label": "artifact", "description": "melted ear", "importance": 60},'
            '{"box_2d": [500, 500, 900, 900], "label": "misalignment", "description": "red not blue",'
            ' "importance": 40},'
            '{"box_2d": [0, 800, 200, 1000], "label": "artifact", "description": "noise", "importance": 10}]</answer>',
        },
        {"image_id": "pred-1", "defects": [{"box_2d": [0, 0, 100, 100], "label": "scratch", "description": "x"}]},
        {
            "image_id": "pred-2",
            "defects": [{"box_2d": [0, 0, 100, 100], "label": "artifact", "description": "x", "importance": 101}],
        },
        {"image_id": "pred-x", "defects": []},
        {"image_id": "pred-0b", "response": "no tags at all"},
    ]
    pfile = tmp_path / "preds.jsonl"
    pfile.write_text("".join(json.dumps(p) + "\n" for p in preds))
    s = predict(pfile, conn, "detector-v1", tmp_path)
    assert (s["created"], s["rejected"]) == (1, 4)
    reasons = [json.loads(x)["reason"] for x in (tmp_path / "preds.predict.rejects.jsonl").read_text().splitlines()]
    assert any("scratch" in r for r in reasons) and any("101" in r for r in reasons)
    assert any("no task" in r for r in reasons) and any("format check" in r for r in reasons)
    project = conn.client.projects.get(id=_pid(conn))
    assert project.model_version == "detector-v1" and project.show_collab_predictions
    # the annotator keeps box 0, moves box 1, deletes box 2: what the editor saves
    tasks = server_tasks(conn, project.id)
    prediction = conn.client.predictions.list(task=tasks["pred-0"])[0]
    by_id: dict[str, list] = {}
    for r in prediction.result:
        by_id.setdefault(r["id"], []).append(dict(r))
    kept = [{**r, "original_width": 100, "original_height": 100, "origin": "prediction"} for r in by_id["pred-0"]]
    moved = ui_region(
        "pred-1",
        "misalignment",
        45,
        50,
        45,
        40,
        "the shirt is red, the prompt says blue",
        45,
        100,
        100,
        origin="prediction-changed",
    )
    conn.client.annotations.create(id=tasks["pred-0"], result=kept + moved, parent_prediction=prediction.id)
    pull(conn, tmp_path / "ann.jsonl")
    rec = ImageRecord.from_json(json.loads((tmp_path / "ann.jsonl").read_text().splitlines()[0]))
    got = {d.provenance["region_id"]: (d.provenance["origin"], d.box.to_grid(), d.importance) for d in rec.defects}
    assert got == {
        "pred-0": ("prediction", [100, 100, 300, 300], 60),
        "pred-1": ("prediction-changed", [450, 500, 900, 900], 45),
    }


@needs_server
def test_pull_since_and_from_export_agree(conn, ls_server, tmp_path):
    from annotation.pull import pull, pull_from_export
    from annotation.push import push, server_tasks

    path, _ = _samples(ls_server["images"], 3, "since")
    push(path, conn, tmp_path)
    tasks = server_tasks(conn, _pid(conn))
    for k in ("since-0", "since-1"):
        conn.client.annotations.create(id=tasks[k], result=ui_region("a", "artifact", 1, 1, 5, 5, "blur", 20, 120, 80))
    time.sleep(1.1)
    mark = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    time.sleep(1.1)
    conn.client.annotations.create(id=tasks["since-2"], result=[])
    s = pull(conn, tmp_path / "new.jsonl", since=mark)
    assert s["tasks"] == 1 and [json.loads(x)["image_id"] for x in (tmp_path / "new.jsonl").open()] == ["since-2"]
    # a JSON export downloaded from the UI gives the same records as pulling from the server
    full = pull(conn, tmp_path / "server.jsonl")
    raw = b"".join(conn.client.projects.exports.download_sync(id=_pid(conn), export_type="JSON"))
    (tmp_path / "export.json").write_bytes(raw)
    pull_from_export(tmp_path / "export.json", tmp_path / "file.jsonl", conn.cfg)
    a = [json.loads(x) for x in (tmp_path / "server.jsonl").open()]
    b = [json.loads(x) for x in (tmp_path / "file.jsonl").open()]
    for r in a + b:  # the plain export names annotators by id; the snapshot by email
        r["provenance"].pop("annotator")
        r["provenance"].pop("consolidation")
    assert full["images"] == 3 and sorted(a, key=lambda r: r["image_id"]) == sorted(b, key=lambda r: r["image_id"])


@needs_server
def test_wrong_token_and_server_down_are_one_line_errors(ls_server, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from sdg_data.cli import app

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "definitely-wrong-token")
    r = CliRunner().invoke(app, ["annotate", "status", "--url", ls_server["cfg"].url])
    assert r.exit_code == 2 and "rejects the token in LABEL_STUDIO_API_KEY" in r.output
    assert "definitely-wrong-token" not in r.output
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"url: http://127.0.0.1:{_free_port()}\nmax_retries: 1\nbackoff_base_s: 0.01\n")
    r = CliRunner().invoke(app, ["annotate", "status", "--config", str(cfg)])
    assert r.exit_code == 2 and "is not answering" in r.output and "after 2 tries" in r.output


@needs_server
def test_predict_with_no_usable_line_writes_its_report_and_fails(conn, ls_server, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from sdg_data.cli import app

    preds = tmp_path / "preds.jsonl"
    preds.write_bytes(b'{"image_id": "nope", "defects": []}\n{not json\n{"image_id": "x", "response": "no tags"}\n')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"url: {conn.cfg.url}\nproject_title: {conn.cfg.project_title}\nwork_dir: {tmp_path}\n")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    r = CliRunner().invoke(app, ["annotate", "predict", str(preds), "--model-version", "det-v0", "--config", str(cfg)])
    assert r.exit_code != 0, r.output  # nothing kept is not success
    assert "read 3: det-v0: created 0, replaced 0, unchanged 0, rejected 3" in r.output
    assert "kept 0 of 3 predictions" in r.output and "top reasons" in r.output
    summary = json.loads((tmp_path / "preds.predict.summary.json").read_text())
    assert summary["created"] == 0 and "nothing imported" in summary["note"]
    reasons = [json.loads(x)["reason"] for x in (tmp_path / "preds.predict.rejects.jsonl").read_text().splitlines()]
    assert len(reasons) == 3 and any("not valid JSON" in x for x in reasons)
    assert any("format check" in x for x in reasons) and any("no task with this image_id" in x for x in reasons)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return any(_alive(int(p.name)) and os.getpgid(int(p.name)) == pgid for p in Path("/proc").iterdir()
               if p.name.isdigit() and _safe_pgid(int(p.name)) == pgid)  # fmt: skip


def _safe_pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _annotate_one(url: str, title: str) -> None:
    """Submit one annotation (two boxes) on the first task of the project titled ``title``, as the admin."""
    import httpx

    from annotation.testkit import random_result

    with httpx.Client(base_url=url, headers={"Authorization": f"Token {TOKEN}"}, timeout=60) as s:
        project = next(p for p in s.get("/api/projects").json()["results"] if p["title"] == title)
        task = s.get("/api/tasks", params={"project": project["id"]}).json()["tasks"][0]
        body = {"result": random_result(random.Random(1), 64, 48), "lead_time": 10.0}
        r = s.post(f"/api/tasks/{task['id']}/annotations/?project={project['id']}", json=body)
        assert r.status_code == 201, r.text[:300]


@needs_server
def test_serve_is_found_by_the_other_commands_and_stops_its_whole_group(ls_server, tmp_path):
    """sdg annotate serve --port P: init finds it without --url; SIGTERM to serve (or sdg annotate stop) ends
    Label Studio and its workers."""
    import shutil
    import signal
    import subprocess
    import sys

    from annotation import server

    env = {**os.environ, **ADMIN, "LABEL_STUDIO_API_KEY": TOKEN, "XDG_STATE_HOME": str(tmp_path / "state")}
    root = Path(__file__).resolve().parents[1]
    images = tmp_path / "images"
    images.mkdir()
    for how in ("sigterm", "stop"):
        data = tmp_path / f"data-{how}"
        shutil.copytree(server.default_cache(TOKEN), data)  # the migrated folder the session fixture made
        port = _free_port()
        console = tmp_path / f"serve-{how}.out"
        serve = subprocess.Popen(
            [sys.executable, "-m", "sdg_data.cli", "annotate", "serve", "--port", str(port), "--data-dir", str(data),
             "--image-root", str(images), "--label-studio-bin", str(LS_BIN)],
            cwd=tmp_path, env=env, stdout=console.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            cfg = _cfg(data_dir=str(data), port=port, image_root=str(images))
            cfg.url = f"http://127.0.0.1:{port}"
            server.wait_ready(cfg, TOKEN, serve, timeout_s=240)  # fails at once if serve exits
            state = json.loads((data / "server.json").read_text())
            assert state["url"] == f"http://127.0.0.1:{port}"
            ls_pid = int(state["pid"])
            recipe = tmp_path / f"{how}.yaml"
            assert state["image_root"] == str(images.resolve())
            recipe.write_text(f"data_dir: {data}\nproject_title: serve-{how}\nwork_dir: {tmp_path / 'work'}\n")
            r = subprocess.run(
                [sys.executable, "-m", "sdg_data.cli", "annotate", "init", "--config", str(recipe)],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert r.returncode == 0 and "created project" in r.stdout, r.stderr[-1500:]  # found the port and root
            if how == "sigterm":  # the README's lines as written: no --url, no --image-root after serve
                src, _ = _samples(images, 2, "served", size=(64, 48))
                for argv in (["push", str(src)], ["pull", "--out", str(tmp_path / "work" / "a.jsonl")]):
                    if argv[0] == "pull":  # one task annotated through the API, as the editor would send it
                        _annotate_one(cfg.url, f"serve-{how}")
                    r = subprocess.run(
                        [sys.executable, "-m", "sdg_data.cli", "annotate", *argv, "--config", str(recipe)],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                    )  # fmt: skip
                    assert r.returncode == 0, r.stdout + r.stderr[-1500:]
                r = subprocess.run(
                    [sys.executable, "-m", "sdg_data.cli", "annotate", "status", "--config", str(recipe)],
                    cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                )  # fmt: skip
                assert r.returncode == 0 and "2 tasks" in r.stdout, r.stdout + r.stderr[-1500:]
                # from another folder, no flags at all: the last server this user started, and its invite link
                elsewhere = tmp_path / "elsewhere"
                elsewhere.mkdir()
                r = subprocess.run([sys.executable, "-m", "sdg_data.cli", "annotate", "init"], cwd=elsewhere, env=env,
                                   capture_output=True, text=True, timeout=120)  # fmt: skip
                assert r.returncode == 0 and "annotators sign up with the invite link http" in r.stdout, r.stderr
                # a routine edit of the pulled records in their folder keeps the vouched image root
                pulled = (tmp_path / "work" / "a.jsonl").read_text().splitlines()
                (tmp_path / "work" / "first.jsonl").write_text(pulled[0] + "\n")
                r = subprocess.run([sys.executable, "-m", "sdg_data.cli", "distill", "work/first.jsonl", "--out",
                                    "work/dist"], cwd=tmp_path, env=env, capture_output=True, text=True,
                                   timeout=120)  # fmt: skip
                assert r.returncode == 0 and "distilled 1, rejected 0" in r.stdout, r.stdout + r.stderr[-1500:]
            shown = console.read_text()
            assert f"is up at http://127.0.0.1:{port}" in shown and "sdg annotate stop" in shown, shown
            assert "password" in shown and ADMIN["LABEL_STUDIO_PASSWORD"] not in shown and TOKEN not in shown
            assert "GET /api" not in shown and "/api/" in (data / "server.log").read_text()  # requests: the log
            if how == "sigterm":
                serve.send_signal(signal.SIGTERM)
            else:
                r = subprocess.run(
                    [sys.executable, "-m", "sdg_data.cli", "annotate", "stop", "--data-dir", str(data)],
                    cwd=root, env=env, capture_output=True, text=True, timeout=120,
                )  # fmt: skip
                assert r.returncode == 0 and f"pid {ls_pid}" in r.stdout, r.stderr
            serve.wait(timeout=60)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _group_alive(ls_pid):
                time.sleep(0.2)
            assert not _group_alive(ls_pid), f"Label Studio ({how}) left processes behind"
            assert (
                not (data / "server.json").exists() and not (tmp_path / "state" / "sdg" / "label-studio.json").exists()
            )
        finally:
            if serve.poll() is None:
                serve.kill()
            left = read_state(_cfg(data_dir=str(data)))
            if left:
                server.stop(int(left["pid"]))


def test_the_url_comes_from_the_flag_the_env_or_the_server_state(tmp_path, monkeypatch):
    from annotation.config import resolve_server

    data = tmp_path / "data"
    data.mkdir()
    (data / "server.json").write_text(json.dumps({"pid": os.getpid(), "url": "http://127.0.0.1:9123"}))
    monkeypatch.delenv("SDG_LABEL_STUDIO_URL", raising=False)
    assert resolve_server(AnnotateConfig(data_dir=str(data)), url_given=False).url == "http://127.0.0.1:9123"
    explicit = AnnotateConfig(data_dir=str(data), url="http://h:1")
    assert resolve_server(explicit, url_given=True).url == "http://h:1"
    monkeypatch.setenv("SDG_LABEL_STUDIO_URL", "http://127.0.0.1:7000/")
    assert resolve_server(AnnotateConfig(data_dir=str(data)), url_given=False).url == "http://127.0.0.1:7000"
    monkeypatch.delenv("SDG_LABEL_STUDIO_URL")
    (data / "server.json").write_text(json.dumps({"pid": 2**22 + 12345, "url": "http://127.0.0.1:9123"}))
    assert resolve_server(AnnotateConfig(data_dir=str(data)), url_given=False).url == AnnotateConfig.url  # dead


# ------------------------------------------------------------------ conversion without a server
def _task(tid, iid, anns):
    return {"id": tid, "data": {"image_id": iid, "caption": "c", "generator": "g", "seed": 1}, "annotations": anns}


def _ann(aid, result, who=1, **kw):
    return {
        "id": aid,
        "result": result,
        "completed_by": who,
        "created_at": f"2026-11-0{aid}T00:00:00Z",
        "updated_at": f"2026-11-0{aid}T00:00:00Z",
        "lead_time": 1.0,
        **kw,
    }


@pytest.mark.parametrize(
    "result, reason",
    [
        (ui_region("r", "scratch", 1, 1, 5, 5, "x", 10, 100, 100), "is not exactly one of"),
        (
            ui_region("r", "artifact", 1, 1, 5, 5, "x", 10, 100, 100)
            + [{"id": "r", "from_name": "rating", "type": "rating", "value": {"rating": 3}}],
            "unknown control(s) ['rating']",
        ),
        (ui_region("r", "artifact", 1, 1, 5, 5, "x", 10, 100, 100) * 2, "2 boxes, 2 descriptions, 2 importances"),
        (ui_region("r", "artifact", 1, 1, 5, 5, "x", 0, 100, 100), "outside 1-100"),
        (ui_region("r", "artifact", 1, 1, 5, 5, "x", None, 100, 100), "without an importance"),
        (ui_region("r", "artifact", 90, 1, 20, 5, "x", 5, 100, 100), "outside the image"),
        (ui_region("r", "artifact", 1, 1, 0, 5, "x", 5, 100, 100), "zero area"),
        (ui_region("r", "artifact", 1, 1, 5, 5, "  ", 5, 100, 100), "empty description"),
        (ui_region("r", "artifact", 1, 1, 5, 5, "x", 5, 100, 100)[1:], "a description without a box"),
        (
            [
                {**x, "value": {**x["value"], "rotation": 15}}
                for x in ui_region("r", "artifact", 1, 1, 5, 5, "x", 5, 100, 100)
            ],
            "rotated",
        ),
        (
            [
                {**x, "value": {**x["value"], "number": "50"}} if x["type"] == "number" else x
                for x in ui_region("r", "artifact", 1, 1, 5, 5, "x", 5, 100, 100)
            ],
            "not a whole number",
        ),
    ],
)
def test_invalid_regions_are_rejected_with_their_reason(result, reason):
    out = convert_export([_task(1, "a", [_ann(1, result)])], AnnotateConfig())
    assert out["counts"]["rejected"] == 1 and not out["records"]
    assert reason in out["rejects"][0].reason


def test_original_size_is_checked_against_the_file(tmp_path):
    from PIL import Image

    root = tmp_path / "imgs"
    root.mkdir()
    Image.new("RGB", (64, 48)).save(root / "a.png")
    task = _task(1, "a", [_ann(1, ui_region("r", "artifact", 1, 1, 5, 5, "x", 5, 100, 100))])
    task["data"]["image"] = "/data/local-files/?d=imgs/a.png"
    out = convert_export([task], AnnotateConfig(image_root=str(root)), doc_root=tmp_path)
    assert "drawn on a 100x100 image but the file is 64x48" in out["rejects"][0].reason


def test_consolidation_policies():
    r = lambda aid, who, created, n: ImageRecord.from_json(  # noqa: E731
        {
            "image_id": "x",
            "defects": [
                {"box_2d": [0, 0, 10 * (k + 1), 10], "label": "artifact", "description": "d"} for k in range(n)
            ],
            "provenance": {"annotator": who, "annotation_id": aid, "created_at": created, "updated_at": created},
        }
    )
    recs = [r(1, "ann@a", "2026-01-02", 1), r(2, "lead@a", "2026-01-03", 2), r(3, "first@a", "2026-01-01", 3)]
    assert len(consolidate(recs, AnnotateConfig()).defects) == 3  # earliest
    chosen = consolidate(recs, AnnotateConfig(primary_annotators=["ann@a"]))
    assert len(chosen.defects) == 1 and chosen.provenance["consolidation"]["rule"] == "primary annotator ann@a"
    chosen = consolidate(recs, AnnotateConfig(consolidation="review", reviewers=["lead@a"]))
    assert len(chosen.defects) == 2 and chosen.provenance["consolidation"]["annotations"] == [1, 2, 3]


def test_agreement_on_a_two_annotator_fixture():
    """Hand-checked: A and B on three images.
    img1: A artifact [0,0,100,100] imp 80; B artifact [0,0,100,120] imp 60 (IoU 0.833 -> match, |diff| 20).
    img2: A artifact [0,0,100,100]; B artifact [500,500,600,600] (IoU 0: no match). A misalignment [0,0,500,500]
          imp 50; B misalignment [0,0,500,500] imp 40 (match, |diff| 10).
    img3: A clean; B artifact [0,0,50,50] imp 30.
    artifact boxes: TP 1, A-only 1, B-only 2 (one on img2, one on A-clean img3, which the paper's GT>0 columns do
    not count) -> precision 1/2, recall 1/2, BoxF1 0.5. DetTypeF1 artifact: img1 TP, img2 TP, img3 FP -> 2*2/(4+1)
    = 0.8. misalignment: BoxF1 1.0, DetTypeF1 1.0. importance MAE: artifact 20, misalignment 10."""

    def rec(iid, who, defects):
        return ImageRecord.from_json({"image_id": iid, "defects": defects, "provenance": {"annotator": who}})

    def d(box, label, imp):
        return {"box_2d": box, "label": label, "importance": imp, "description": "d"}

    a = [
        rec("1", "A", [d([0, 0, 100, 100], "artifact", 80)]),
        rec("2", "A", [d([0, 0, 100, 100], "artifact", 70), d([0, 0, 500, 500], "misalignment", 50)]),
        rec("3", "A", []),
    ]
    b = [
        rec("1", "B", [d([0, 0, 100, 120], "artifact", 60)]),
        rec("2", "B", [d([500, 500, 600, 600], "artifact", 70), d([0, 0, 500, 500], "misalignment", 40)]),
        rec("3", "B", [d([0, 0, 50, 50], "artifact", 30)]),
    ]
    rep = agreement(a + b)
    pair = rep["pairs"]["A | B"]
    assert pair["images"] == 3
    assert pair["artifact"]["BoxF1@0.5"] == pytest.approx(0.5)
    assert pair["artifact"]["DetTypeF1"] == pytest.approx(0.8)
    assert pair["artifact"]["importance_MAE"] == pytest.approx(20.0)
    assert pair["misalignment"]["BoxF1@0.5"] == pytest.approx(1.0)
    assert pair["misalignment"]["DetTypeF1"] == pytest.approx(1.0)
    assert pair["misalignment"]["importance_MAE"] == pytest.approx(10.0)
    assert rep["overall"]["artifact"]["BoxF1@0.5"] == pytest.approx(0.5)


@needs_server
def test_the_server_log_holds_no_traceback(ls_server):
    """Runs last: the annotate commands above left no "Invalid page" traceback and no server error. (The
    wrong-token test's 401 is logged with its traceback by Django REST framework, by design.)"""
    log = (Path(ls_server["cfg"].data_dir) / "server.log").read_text(errors="replace")
    assert "Invalid page" not in log and "Internal Server Error" not in log and '" 500 ' not in log


# ------------------------------------------------------------------ blind A/B judging
def _refine_manifest(images: Path, mode: str, n: int) -> Path:
    from PIL import Image

    folder = images / f"judge-{mode}"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        Image.new("RGB", (48, 48), (30 * i, 100 if mode == "boxes+text" else 10, 60)).save(folder / f"{i}.png")
        rows.append({"image_id": f"src{i}.{mode}", "image_path": f"{i}.png", "width": 48, "height": 48,
                     "caption": f"prompt {i}", "defects": [],
                     "provenance": {"stage": "refine", "mode": mode, "source_image_id": f"src{i}"}})  # fmt: skip
    path = folder / "refined.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@needs_server
def test_blind_judging_push_pull_unblinds_with_the_recorded_order(ls_server, monkeypatch, request, tmp_path):
    from annotation.client import Connection
    from annotation.judge import LEFT, RIGHT, SAME, ensure_judge_project, judge_pull, judge_push
    from annotation.push import server_tasks

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    cfg = AnnotateConfig(**{**ls_server["cfg"].__dict__, "judge_title": f"judge-{request.node.name}"[:50]})
    conn = Connection(cfg)
    project, created = ensure_judge_project(conn)
    assert created and not ensure_judge_project(conn)[1]  # idempotent
    a = _refine_manifest(ls_server["images"], "boxes+text", 8)
    b = _refine_manifest(ls_server["images"], "caption-only", 8)
    s = judge_push(conn, a, b, tmp_path)
    assert (s["kept"], s["created"], s["a_method"], s["b_method"]) == (8, 8, "boxes+text", "caption-only")
    assert judge_push(conn, a, b, tmp_path)["created"] == 0  # a second push creates nothing
    tasks = server_tasks(conn, project.id, key="pair_id")
    assert len(tasks) == 8
    c = conn.client
    orders = {}
    for tid in tasks.values():
        t = c.tasks.get(id=tid)
        assert set(t.data) == {"left", "right", "caption", "pair_id"}  # nothing in view names a method
        orders[tid] = t.meta["order"]
        # the annotator prefers the image whose green is 100: method A's (boxes+text), wherever it is shown
        choice = LEFT if t.meta["order"] == "ab" else RIGHT
        if t.meta["a_image_id"] == "src0.boxes+text":
            choice = SAME
        result = [{"from_name": "verdict", "to_name": "left", "type": "choices", "value": {"choices": [choice]}}]
        c.annotations.create(id=tid, result=result)
    assert set(orders.values()) == {"ab", "ba"}  # both orders occur: the side is no hint
    out = tmp_path / "judged.jsonl"
    res = judge_pull(conn, out)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 8 and res["rejected"] == 0
    assert sorted(r["verdict"] for r in rows) == ["good"] * 7 + ["same"]  # un-blinded: A was always chosen
    t = res["tally"]["boxes+text vs caption-only"]
    assert t["good"]["count"] == 7 and t["same"]["count"] == 1 and t["bad"]["count"] == 0
    lo, hi = t["good"]["ci95"]
    assert lo < 7 / 8 < hi


def test_judging_tally_agreement_and_intervals_on_a_fixture():
    from annotation.judge import LEFT, RIGHT, SAME, cohen_kappa, judgments, tally, unblind, wilson

    assert unblind(LEFT, "ab") == "good" and unblind(LEFT, "ba") == "bad" and unblind(SAME, "ba") == "same"
    assert unblind(RIGHT, "ba") == "good"
    meta = {"judge": "sdg-judge/1", "a_method": "sdg", "b_method": "fixed", "a_image_id": "a", "b_image_id": "b"}

    def task(tid, order, choices):
        anns = [{"completed_by": who, "result": [{"from_name": "verdict", "value": {"choices": [ch]}}]}
                for who, ch in choices]  # fmt: skip
        return {"id": tid, "data": {"pair_id": f"p{tid}"}, "meta": {**meta, "order": order}, "annotations": anns}

    tasks = [task(1, "ab", [(1, LEFT), (2, LEFT)]), task(2, "ba", [(1, RIGHT), (2, SAME)]),
             task(3, "ab", [(1, SAME), (2, SAME)]), task(4, "ba", [(1, RIGHT), (2, LEFT)]),
             {"id": 5, "data": {}, "meta": {}, "annotations": [{"result": []}]}]  # fmt: skip
    rows, rejects = judgments(tasks, {1: "ann1@x", 2: "ann2@x"})
    assert len(rows) == 8 and len(rejects) == 1 and "order" in rejects[0].reason
    t = tally(rows)["sdg vs fixed"]
    assert (t["good"]["count"], t["same"]["count"], t["bad"]["count"]) == (4, 3, 1)
    ag = t["annotator_agreement"]["ann1@x ~ ann2@x"]
    assert ag["pairs"] == 4 and ag["agreement"] == 0.5
    # by hand: ann1 = good good same good, ann2 = good same same bad
    assert ag["kappa"] == pytest.approx(cohen_kappa([("good", "good"), ("good", "same"), ("same", "same"),
                                                     ("good", "bad")]))  # fmt: skip
    po, pe = 0.5, (3 * 1 + 1 * 2 + 0 * 1) / 16
    assert ag["kappa"] == pytest.approx((po - pe) / (1 - pe))
    lo, hi = wilson(4, 8)
    assert lo == pytest.approx(0.2152, abs=1e-3) and hi == pytest.approx(0.7848, abs=1e-3)


def test_judge_pull_from_an_export_file_unblinds_offline(tmp_path):
    import subprocess
    import sys

    from sdg_data.testkit.judging import simulated_export

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for path, mode in ((a, "boxes+text"), (b, "caption-only")):
        path.write_text("".join(json.dumps({"image_id": f"s{i}.{mode}", "caption": "c",
                                            "provenance": {"mode": mode, "source_image_id": f"s{i}"}}) + "\n"
                                for i in range(30)))  # fmt: skip
    assert simulated_export(a, b, tmp_path / "export.json", prefer_a=1.0) == 30
    sdg = str(Path(sys.executable).parent / "sdg")
    res = subprocess.run([sdg, "annotate", "judge-pull", "--from-export", str(tmp_path / "export.json"), "--out",
                          str(tmp_path / "j.jsonl")], capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    tally = json.loads((tmp_path / "j.tally.json").read_text())["tally"]["boxes+text vs caption-only"]
    assert tally["good"]["count"] == 60 and tally["judgments"] == 60  # A always preferred, whichever side it was on
    assert tally["annotator_agreement"]["user-1 ~ user-2"]["agreement"] == 1.0  # named as pull names them


def test_judge_pairs_a_refine_manifest_with_its_sources(tmp_path):
    from annotation.judge import _manifest, pair_id

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "recs.jsonl").write_text(json.dumps({"image_id": "s1", "image_path": "img/1.png"}) + "\n")
    (tmp_path / "ref").mkdir()
    row = {"image_id": "s1.boxes+text", "image_path": "edits/s1.png", "caption": "c",
           "provenance": {"stage": "refine", "mode": "boxes+text", "source_image_id": "s1"}}  # fmt: skip
    (tmp_path / "ref" / "refined.jsonl").write_text(json.dumps(row) + "\n")
    a_method, a = _manifest(tmp_path / "ref" / "refined.jsonl", None)
    b_method, b = _manifest(tmp_path / "src" / "recs.jsonl", "original")
    assert (a_method, b_method) == ("boxes+text", "original") and set(a) == set(b) == {"s1"}
    assert b["s1"].path == (tmp_path / "src" / "img" / "1.png").resolve()
    assert pair_id(a["s1"], b["s1"]) != pair_id(b["s1"], a["s1"])  # A and B are not interchangeable


def test_serve_installs_label_studio_once_per_user_wherever_it_runs(tmp_path, monkeypatch, capsys):
    """No Label Studio in the installation or beside this Python: serve installs the pinned one once, in the
    per-user environment, saying so, and every working folder finds it there afterwards; a binary named
    elsewhere is never installed over, only reported."""
    import subprocess

    from annotation import server

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("SDG_LABEL_STUDIO_BIN", raising=False)
    user_bin = server.user_label_studio() / "bin" / "label-studio"
    monkeypatch.setattr(server, "label_studio_places",
                        lambda: [tmp_path / "repo" / ".venv-ls" / "bin" / "label-studio", user_bin])  # fmt: skip
    calls = []

    def fake_call(argv, **kw):  # the venv and pip steps, recorded; the last one leaves the program in place
        calls.append(argv)
        if "label-studio==" + server.LABEL_STUDIO_VERSION in argv:
            user_bin.parent.mkdir(parents=True, exist_ok=True)
            user_bin.write_text("#!/bin/sh\n")
        return 0

    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    monkeypatch.setattr(subprocess, "call", fake_call)
    argv = server.command(AnnotateConfig(), install=True)
    assert argv[0] == str(user_bin) and argv[1] == "start"
    assert calls[0][1:3] == ["-m", "venv"] and calls[-1][-1] == f"label-studio=={server.LABEL_STUDIO_VERSION}"
    assert f"installing it into {server.user_label_studio()}" in capsys.readouterr().out
    assert not (tmp_path / "project" / ".venv-ls").exists()  # nothing in the user's working folder
    calls.clear()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert server.command(AnnotateConfig(), install=True)[0] == str(user_bin) and not calls  # installed once
    with pytest.raises(ServerError, match="no Label Studio at /nowhere/label-studio"):
        server.command(AnnotateConfig(label_studio_bin="/nowhere/label-studio"), install=True)
    monkeypatch.setattr(subprocess, "call", lambda argv, **kw: calls.append(argv) or 1)
    user_bin.unlink()
    with pytest.raises(ServerError, match="installing Label Studio failed"):
        server.command(AnnotateConfig(), install=True)
