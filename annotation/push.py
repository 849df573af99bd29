"""``sdg annotate push``: image records -> Label Studio tasks, idempotent by image_id, checked against the server.

A task carries the image as a local-files URL (the file must lie inside the image root), the caption, generator,
seed and our image_id. Images already on the server (by image_id) are not sent again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from annotation.client import AnnotateError, Connection, require_image_root, require_project
from annotation.labeling import CONFIG_VERSION, about_line
from annotation.server import document_root
from sdg_data.io.jsonl import usable_lines
from sdg_data.io.report import StageReport
from sdg_data.records import ImageRecord, RecordError, Reject


def image_url(rel_to_doc_root: str) -> str:
    return "/data/local-files/?d=" + quote(rel_to_doc_root, safe="/")


def resolve_inside(path: str, base: Path, root: Path, _dirs: dict[str, str] | None = None) -> Path:
    """The image file, which must exist and lie inside ``root`` (no ``..`` out of it, no absolute path elsewhere,
    no symlink leading out). Folder resolutions are cached in ``_dirs``: 30K files in a few folders cost a few
    realpath calls, not 30K."""
    joined = os.path.join(str(base), path)  # an absolute path stays as it is
    folder, name = os.path.split(joined)
    if name in ("", ".", ".."):
        full = os.path.realpath(joined)
    else:
        cache = _dirs if _dirs is not None else {}
        real_folder = cache.get(folder)
        if real_folder is None:
            real_folder = cache[folder] = os.path.realpath(folder)
        full = os.path.join(real_folder, name)
        if os.path.islink(full):
            full = os.path.realpath(full)
    root_s = str(root)
    if not (full == root_s or full.startswith(root_s.rstrip(os.sep) + os.sep)):
        raise ValueError(f"{path} resolves to {full}, outside the image root {root}")
    if not os.path.isfile(full):
        raise FileNotFoundError(f"{full} does not exist")
    return Path(full)


def task_for(rec: ImageRecord, full: Path, doc_root: Path) -> dict[str, Any]:
    rel = os.path.relpath(full, doc_root).replace(os.sep, "/")
    return {
        "data": {
            "image": image_url(rel),
            "image_id": rec.image_id,
            "caption": rec.caption or "",
            "generator": rec.generator or "",
            "seed": rec.seed if rec.seed is not None else "",
            "split": rec.split or "",
            "about": about_line(rec.generator, rec.seed, rec.image_id),
        },
        "meta": {"image_id": rec.image_id, "labeling": CONFIG_VERSION},
    }


def task_count(conn: Connection, project_id: int) -> int:
    return int(conn.call("count tasks", lambda: conn.client.projects.get(id=project_id)).task_number or 0)


def server_tasks(conn: Connection, project_id: int, key: str = "image_id") -> dict[str, int]:
    """image_id (or another ``data`` field) -> task id of every task in the project. Only id and data are asked
    for (a third of the time of the lightest full task form: 30K tasks in ~9 s); paged by hand, since the SDK pager
    can ask for a page past the end."""
    out: dict[str, int] = {}
    page, size = 1, 5000
    if task_count(conn, project_id) == 0:  # page 1 of nothing is an "Invalid page" traceback in the server's log
        return out
    while True:
        params = {"project": project_id, "page": page, "page_size": size, "include": "id,data"}
        body = conn.get_json("list tasks", "api/tasks/", params)
        tasks = body.get("tasks", []) if isinstance(body, dict) else body
        for t in tasks:
            iid = (t.get("data") or {}).get(key)
            if iid:
                out[iid] = t["id"]
        total = body.get("total", len(tasks)) if isinstance(body, dict) else len(tasks)
        if not tasks or page * size >= total:
            return out
        page += 1


class _Reader:
    """Reads and checks the samples lazily (so checking overlaps the server's work on the previous chunk), keeping
    the rejects and the number of lines read."""

    def __init__(self, path: Path, root: Path, doc_root: Path):
        self.path, self.root, self.doc_root = path, root, doc_root
        self.rejects: list[Reject] = []
        self.read = 0

    def __iter__(self):
        seen: dict[str, int] = {}
        dirs: dict[str, str] = {}
        bad: list[Reject] = []
        for lineno, obj in usable_lines(self.path, "push", bad):
            self.read += len(bad) + 1
            self.rejects += bad
            bad.clear()
            iid = obj.get("image_id") if isinstance(obj, dict) else None
            try:
                rec = ImageRecord.from_json(obj)
                if rec.image_id in seen:
                    raise RecordError(rec.image_id, "image_id", f"duplicate of line {seen[rec.image_id]} in this push")
                seen[rec.image_id] = lineno
                rec.require("image_path", "caption")
                try:
                    full = resolve_inside(rec.image_path, self.path.parent, self.root, dirs)
                except (ValueError, FileNotFoundError) as exc:
                    raise RecordError(rec.image_id, "image_path", str(exc)) from None
            except RecordError as exc:
                self.rejects.append(Reject(str(exc), "push", iid, f"{self.path}:{lineno}", lineno, obj))
                continue
            yield task_for(rec, full, self.doc_root)
        self.read += len(bad)
        self.rejects += bad


def read_samples(path: Path, root: Path, doc_root: Path) -> tuple[list[dict[str, Any]], list[Reject], int]:
    """Tasks for the usable lines; rejects (line, image_id, field, reason) for the rest; lines read."""
    reader = _Reader(path, root, doc_root)
    tasks = list(reader)
    return tasks, reader.rejects, reader.read


def _chunks(tasks, skip: dict[str, int], size: int, counts: dict[str, int]):
    chunk: list[dict[str, Any]] = []
    for t in tasks:
        if t["data"]["image_id"] in skip:
            counts["already"] += 1
            continue
        chunk.append(t)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def push(samples: str | Path, conn: Connection, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Import the samples as tasks in chunks; already-present image_ids are skipped; counts are checked.

    While the server stores one chunk, the next one is read and checked here (one request in flight)."""
    from concurrent.futures import ThreadPoolExecutor

    from sdg_data.io.gc_pause import gc_paused

    t0 = time.perf_counter()
    cfg = conn.cfg
    samples = Path(samples)
    project = require_project(conn)
    root = require_image_root(conn, project)
    doc_root = document_root_of(cfg)
    if samples.is_dir():  # a built dataset: its images written out under the image root, where the server serves
        from sdg_data.io.sources import records_input

        samples = records_input(samples, Path(root) / f"{samples.resolve().name}-images")
    n_before = task_count(conn, project.id)
    before = server_tasks(conn, project.id) if n_before else {}  # an empty project needs no listing
    if len(before) != n_before:
        raise AnnotateError(f"the project has {n_before} tasks but only {len(before)} carry an image_id")
    reader = _Reader(samples, root, doc_root)
    counts = {"already": 0}

    def send(chunk: list[dict[str, Any]]) -> int:
        """One chunk, never twice: a try whose answer was lost (timeout, dropped connection, a 5xx after the
        commit) may have been stored, so before a retry the ids now on the server are dropped from the chunk."""
        state = {"todo": chunk, "stored_before_retry": 0}

        def trim() -> None:
            present = server_tasks(conn, project.id)
            todo = [t for t in state["todo"] if t["data"]["image_id"] not in present]
            state["stored_before_retry"] += len(state["todo"]) - len(todo)
            state["todo"] = todo

        def attempt():
            if not state["todo"]:
                return None
            return conn.client.projects.import_tasks(id=project.id, request=state["todo"], return_task_ids=True)

        resp = conn.call("import tasks", attempt, before_retry=trim)
        sent = len(state["todo"])
        got = getattr(resp, "task_count", None) if resp is not None else 0
        ids = (getattr(resp, "task_ids", None) or []) if resp is not None else []
        if got != sent or len(ids) != sent:
            raise AnnotateError(f"import tasks: sent {sent}, the server created {got}")
        return got + state["stored_before_retry"]

    created = 0
    with gc_paused(), ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for chunk in _chunks(reader, before, cfg.chunk_size, counts):
            if pending is not None:
                created += pending.result()
            pending = pool.submit(send, chunk)
        if pending is not None:
            created += pending.result()
    n_after = task_count(conn, project.id)
    if n_after != n_before + created:
        raise AnnotateError(
            f"server task count does not add up: {n_before} before + {created} created != {n_after} now"
        )
    report = StageReport("push", read=reader.read, kept=counts["already"] + created)
    report.add(reader.rejects)
    report.extras = {
        "project": project.id,
        "already_on_server": counts["already"],
        "created": created,
        "tasks_on_server": n_after,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    folder = Path(out_dir) if out_dir else Path(cfg.work_dir)
    summary = report.write(folder, prefix=f"{samples.stem}.")
    summary["reports"] = str(folder)
    return summary


def document_root_of(cfg) -> Path:
    try:
        return document_root(cfg)
    except Exception as exc:  # noqa: BLE001
        raise AnnotateError(str(exc)) from None


__all__ = ["push", "server_tasks", "read_samples"]
