"""The team setup: Label Studio on a real PostgreSQL (init, push, annotate, pull), the backup drill the README
describes (dump, stop, restore into a fresh database, pull again: the same records), and SQLite's online backup."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from annotation.config import AnnotateConfig
from annotation.uiform import ui_region
from tests.lskit import ADMIN, TOKEN, needs_postgres, needs_server, samples


def _conn(server, monkeypatch, title):
    from annotation.client import Connection, ensure_project

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    conn = Connection(AnnotateConfig(**{**server["cfg"].__dict__, "project_title": title}))
    ensure_project(conn)
    return conn


def _annotate(conn, tasks: dict[str, int]) -> None:
    """Three annotations in the editor's structure: two boxes, one box, and a clean image."""
    c = conn.client
    c.annotations.create(
        id=tasks["t-0"],
        result=ui_region("a1", "artifact", 10, 20, 30, 40, "a melted hand", 72, 120, 80)
        + ui_region("a2", "misalignment", 50, 50, 25, 25, "two cats, the prompt says one", 40, 120, 80),
        lead_time=31.5,
    )
    c.annotations.create(
        id=tasks["t-1"], result=ui_region("b1", "artifact", 0, 0, 50, 50, "warped text", 15, 120, 80), lead_time=12
    )
    c.annotations.create(id=tasks["t-2"], result=[], lead_time=4.0)


@needs_postgres
def test_init_push_annotate_pull_on_postgresql(pg_server, monkeypatch, tmp_path):
    from annotation.pull import pull
    from annotation.push import push, server_tasks
    from sdg_data.records import ImageRecord

    conn = _conn(pg_server, monkeypatch, "sdg on postgres")
    path, _ = samples(pg_server["images"], 4, "t")
    assert push(path, conn, tmp_path)["created"] == 4
    assert push(path, conn, tmp_path)["created"] == 0  # idempotent on PostgreSQL too
    tasks = server_tasks(conn, _project(conn))
    _annotate(conn, tasks)
    s = pull(conn, tmp_path / "pg.jsonl")
    assert (s["annotations"], s["valid"], s["clean_images"]) == (3, 3, 1)
    recs = {r.image_id: r for r in map(ImageRecord.from_json, _lines(tmp_path / "pg.jsonl"))}
    assert [d.box.to_grid() for d in recs["t-0"].defects] == [[100, 200, 400, 600], [500, 500, 750, 750]]
    assert [d.importance for d in recs["t-0"].defects] == [72, 40] and recs["t-2"].defects == []
    # the rows are in PostgreSQL, not in a SQLite file beside the server
    pg = pg_server["pg"]
    assert int(pg.psql("SELECT count(*) FROM task_completion", pg.database)) == 3
    assert not list(Path(pg_server["cfg"].data_dir).glob("*.sqlite3"))


def _project(conn) -> int:
    from annotation.client import require_project

    return require_project(conn).id


def _lines(path):
    import json

    return [json.loads(x) for x in path.read_text().splitlines()]


@needs_postgres
def test_backup_drill_dump_stop_restore_into_a_fresh_database_pull_again(pg_server, monkeypatch, tmp_path):
    """The README's drill, with the CLI: backup while the server runs, stop it, restore into a new database,
    start the server on that one, pull again: byte-identical records."""
    from annotation import server
    from annotation.pull import pull
    from annotation.push import push, server_tasks

    conn = _conn(pg_server, monkeypatch, "sdg backup drill")
    path, _ = samples(pg_server["images"], 3, "t")
    push(path, conn, tmp_path)
    _annotate(conn, server_tasks(conn, _project(conn)))
    pull(conn, tmp_path / "before.jsonl")

    pg, cfg = pg_server["pg"], pg_server["cfg"]
    env = {**os.environ, **pg.env(), "LABEL_STUDIO_API_KEY": TOKEN}
    dump = tmp_path / "backups" / "ls.dump"
    cli = [sys.executable, "-m", "sdg_data.cli", "annotate"]
    r = subprocess.run([*cli, "backup", "--database", "postgresql", "--out", str(dump)], env=env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0 and "backed up postgresql" in r.stdout, r.stderr[-2000:]
    assert dump.stat().st_size > 10_000 and not dump.with_name("ls.dump.part").exists()
    assert pg.password not in r.stdout + r.stderr

    server.stop(pg_server["proc"].pid)
    pg_server["proc"].wait(timeout=30)
    pg.ensure_database("ls_restored")
    restored_env = {**env, "POSTGRE_NAME": "ls_restored"}
    r = subprocess.run([*cli, "restore", "--database", "postgresql", "--from", str(dump)], env=restored_env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0 and "restored" in r.stdout, r.stderr[-2000:]
    # a restore into a database that is not empty is refused with one line, never merged
    r = subprocess.run([*cli, "restore", "--database", "postgresql", "--from", str(dump)], env=restored_env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode != 0 and "Traceback" not in r.stderr and "pg_restore failed" in r.stderr

    pg_server["proc"] = server.start(cfg, TOKEN, env={**os.environ, **ADMIN, **pg.env("ls_restored")})
    pull(conn, tmp_path / "after.jsonl")
    for name in ("before.jsonl", "before.all.jsonl"):
        after = name.replace("before", "after")
        assert (tmp_path / name).read_bytes() == (tmp_path / after).read_bytes(), name
    assert (tmp_path / "after.jsonl").read_text().count("melted hand") == 1


@needs_server
def test_sqlite_online_backup_and_restore(ls_server, monkeypatch, tmp_path):
    """SQLite: a consistent copy while the server runs; restore refuses to overwrite, accepts a new data folder."""
    from annotation.postgres import PostgresError, backup, restore

    data = ls_server["cfg"].data_dir
    s = backup("sqlite", data, tmp_path / "ls.sqlite3")
    with sqlite3.connect(tmp_path / "ls.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM htx_user").fetchone()[0] >= 1
    assert s["bytes"] > 100_000
    with pytest.raises(PostgresError, match="exists"):
        restore("sqlite", data, tmp_path / "ls.sqlite3")
    (tmp_path / "junk").write_bytes(b"not a database" * 100)
    with pytest.raises(PostgresError, match="not a sound SQLite"):
        restore("sqlite", tmp_path / "new", tmp_path / "junk")
    restore("sqlite", tmp_path / "new", tmp_path / "ls.sqlite3")
    assert (tmp_path / "new" / "label_studio.sqlite3").stat().st_size == s["bytes"]


@needs_server
def test_a_push_retry_after_a_lost_answer_creates_no_duplicate(ls_server, monkeypatch, tmp_path):
    """The server stores a chunk but the answer is lost (a read timeout): the retry sends only what is missing."""
    import httpx

    from annotation.push import push, server_tasks

    conn = _conn(ls_server, monkeypatch, "sdg push retry")
    conn.cfg.chunk_size = 3
    path, _ = samples(ls_server["images"], 7, "retry")
    real = conn.client.projects.import_tasks
    calls = []

    def flaky(**kw):
        calls.append(len(kw["request"]))
        resp = real(**kw)
        if len(calls) in (2, 3):  # stored, but the answer never comes back
            raise httpx.ReadTimeout("answer lost")
        return resp

    monkeypatch.setattr(conn.client.projects, "import_tasks", flaky)
    s = push(path, conn, tmp_path)
    tasks = server_tasks(conn, _project(conn))
    assert (s["created"], s["tasks_on_server"], len(tasks)) == (7, 7, 7)
    assert calls == [3, 3, 1]  # chunks 2 and 3 lost their answers; each retry found them stored and sent nothing


@pytest.mark.parametrize("damage", ["not sqlite", "torn page"])
def test_backup_of_a_damaged_sqlite_file_is_one_line_and_leaves_nothing(tmp_path, damage):
    """No traceback and no half-made backup: the error names the file, and neither OUT nor OUT.part exists."""
    import sqlite3

    from annotation.postgres import PostgresError, backup

    db = tmp_path / "data" / "label_studio.sqlite3"
    db.parent.mkdir()
    if damage == "not sqlite":
        db.write_bytes(b"this is not a database at all" * 100)
    else:
        con = sqlite3.connect(db)
        con.execute("create table t (x text)")
        con.executemany("insert into t values (?)", [(f"row {i} " * 50,) for i in range(2000)])
        con.commit()
        con.close()
        raw = bytearray(db.read_bytes())
        raw[4096 * 3 : 4096 * 3 + 200] = b"\xff" * 200  # a b-tree page overwritten
        db.write_bytes(bytes(raw))
    out = tmp_path / "b" / "ls.sqlite3"
    with pytest.raises(PostgresError, match="cannot be backed up") as exc:
        backup("sqlite", db.parent, out)
    assert "\n" not in str(exc.value) and str(db) in str(exc.value)
    assert not out.exists() and not out.with_name(out.name + ".part").exists()
