"""``sdg annotate predict``: a detector's output -> Label Studio pre-annotations, validated here first.

Label Studio accepts unknown labels and out-of-range values and silently drops bad items of a bulk import, so
every prediction is parsed with the core parser and checked against the labeling config before it is sent, and
the server's ``created`` count must equal what was sent. Each box becomes the three results the UI itself writes
for a region (rectangle, description, importance) under one region id.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from annotation.client import AnnotateError, Connection, require_project, set_model_version
from annotation.labeling import IMPORTANCE_MAX, IMPORTANCE_MIN, LABELS
from annotation.predictions import canonical as _canonical
from annotation.predictions import each as _each
from annotation.predictions import import_new as _import_new
from annotation.predictions import project_predictions
from annotation.push import server_tasks
from annotation.uiform import ui_region
from sdg_data.answer import parse_response
from sdg_data.io.jsonl import usable_lines
from sdg_data.io.report import StageReport
from sdg_data.records import Defect, RecordError, Reject


def region_results(rid: str, d: Defect, width: int | None, height: int | None) -> list[dict[str, Any]]:
    """The rectangle, description and importance results of one region, as the UI writes them."""
    ls = d.box.to_label_studio()
    return ui_region(
        rid, d.label, ls["x"], ls["y"], ls["width"], ls["height"], d.description, d.importance, width, height, None
    )


def check_defect(d: Defect, where: str) -> None:
    """What the labeling config allows (the server would not check): known label, a box inside the image with a
    positive size, a description, an importance 1-100 if given."""
    if d.label not in LABELS:
        raise ValueError(f"{where}: label {d.label!r} is not one of {list(LABELS)}")
    problem = d.box.problem()
    if problem:
        raise ValueError(f"{where}: {problem}")
    if not d.description.strip():
        raise ValueError(f"{where}: empty description")
    if d.importance is not None and not IMPORTANCE_MIN <= d.importance <= IMPORTANCE_MAX:
        raise ValueError(f"{where}: importance {d.importance} outside {IMPORTANCE_MIN}-{IMPORTANCE_MAX}")


def read_predictions(path: Path, box_order: str = "xyxy") -> tuple[list[dict[str, Any]], list[Reject], int]:
    """(image_id, defects, raw) per usable line; rejects with line and reason; lines read. A line holds raw model
    text under ``response`` (parsed with the core parser; a failed format check rejects it) or ``defects``."""
    rows: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    seen: set[str] = set()
    for lineno, obj in usable_lines(path, "predict", rejects):
        iid = obj.get("image_id") if isinstance(obj, dict) else None
        try:
            if not isinstance(iid, str) or not iid:
                raise ValueError("image_id: missing")
            if iid in seen:
                raise ValueError("image_id: repeated in this file")
            seen.add(iid)
            if "response" in obj:
                res = parse_response(obj["response"], order=box_order)
                if not res.format_ok:
                    raise ValueError(f"response: fails the format check ({res.reason})")
                defects = res.defects
            elif "defects" in obj:
                if not isinstance(obj["defects"], list):
                    raise ValueError("defects: must be a list")
                defects = [Defect.from_json(d, iid, f"defects[{j}]", box_order) for j, d in enumerate(obj["defects"])]
            else:
                raise ValueError("needs 'response' (model text) or 'defects'")
            for j, d in enumerate(defects):
                check_defect(d, f"defects[{j}]")
        except (ValueError, RecordError) as exc:
            rejects.append(Reject(str(exc), "predict", iid, f"{path}:{lineno}", lineno, obj))
            continue
        rows.append({"image_id": iid, "defects": defects, "width": obj.get("width"), "height": obj.get("height")})
    return rows, rejects, len(rows) + len(rejects)


def _plan(
    payload: list[dict], existing: dict[int, list[Any]]
) -> tuple[list[dict], list[tuple[int, dict]], list[int], int]:
    """What to create, what to replace in place (prediction id, new body), what to delete (repeats of this version
    on one task, left by earlier runs) and how many are identical already."""
    create: list[dict] = []
    replace: list[tuple[int, dict]] = []
    delete: list[int] = []
    unchanged = 0
    for item in payload:
        mine = existing.get(item["task"], [])
        if not mine:
            create.append(item)
            continue
        keep, extra = mine[0], mine[1:]
        delete += [p["id"] for p in extra]
        if _canonical(keep.get("result")) == _canonical(item["result"]):
            unchanged += 1
        else:
            replace.append((keep["id"], item))
    return create, replace, delete, unchanged


def predict(path: str | Path, conn: Connection, model_version: str, out_dir: str | Path | None = None) -> dict:
    """Import the predictions for the project's tasks and make the project show them prefilled.

    Idempotent per model version: a task that already has this version's prediction gets it replaced in place
    (its id, and the annotations started from it, stay) or is left alone when identical, so a rerun never adds a
    second prefilled tab. Everything is read and checked before the first write, and the only project setting
    touched is the model version shown."""
    t0 = time.perf_counter()
    path = Path(path)
    if not model_version.strip():
        raise AnnotateError("--model-version is required (annotators see it; provenance keeps it)")
    project = require_project(conn)
    rows, rejects, n = read_predictions(path)
    tasks = server_tasks(conn, project.id)
    payload = []
    for row in rows:
        tid = tasks.get(row["image_id"])
        if tid is None:
            rejects.append(Reject("no task with this image_id", "predict", row["image_id"], str(path)))
            continue
        result = []
        for k, d in enumerate(row["defects"]):
            result += region_results(f"pred-{k}", d, row["width"], row["height"])
        payload.append({"task": tid, "model_version": model_version, "result": result})
    create, replace, delete, unchanged = _plan(payload, project_predictions(conn, project.id, model_version))
    # writes from here on
    created = _import_new(conn, project.id, create)
    _each(conn, "replace prediction", replace, lambda pid, item: conn.client.predictions.update(
        id=pid, result=item["result"], model_version=model_version))  # fmt: skip
    _each(conn, "delete repeated prediction", [(pid, None) for pid in delete],
          lambda pid, _: conn.client.predictions.delete(id=pid))  # fmt: skip
    kept = created + len(replace) + unchanged
    shown_before = getattr(project, "model_version", None)
    if kept and shown_before != model_version:  # the server accepts a version only once it holds its predictions
        set_model_version(conn, project, model_version)
    queue = {"applied": False}
    if kept:  # a project with a queue (push --order, gold) keeps it, now carrying this prefill
        from annotation.queue import keep_queue

        queue = keep_queue(conn, tasks)
    report = StageReport("predict", read=n, kept=kept)
    report.add(rejects)
    report.extras = {
        "project": project.id,
        "created": created,
        "replaced": len(replace),
        "unchanged": unchanged,
        "repeats_removed": len(delete),
        "model_version": model_version,
        "model_version_shown": (queue.get("model_version") or model_version) if kept else shown_before,
        "queue": queue,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if not kept:
        report.extras["note"] = "no usable prediction: nothing imported, the project's model version is unchanged"
    folder = Path(out_dir) if out_dir else Path(conn.cfg.work_dir)
    summary = report.write(folder, prefix=f"{path.stem}.")
    summary["reports"] = str(folder)
    return summary
