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

from annotation.client import AnnotateError, Connection, ensure_project, require_project
from annotation.labeling import IMPORTANCE_MAX, IMPORTANCE_MIN, LABELS
from annotation.push import server_tasks
from annotation.uiform import ui_region
from sdg_data.answer import parse_response
from sdg_data.jsonl import usable_lines
from sdg_data.records import Defect, RecordError
from sdg_data.report import StageReport


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


def read_predictions(path: Path, box_order: str = "xyxy") -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(image_id, defects, raw) per usable line; rejects with line and reason; lines read. A line holds raw model
    text under ``response`` (parsed with the core parser; a failed format check rejects it) or ``defects``."""
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
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
            rejects.append({"line": lineno, "image_id": iid, "stage": "predict", "reason": str(exc)})
            continue
        rows.append({"image_id": iid, "defects": defects, "width": obj.get("width"), "height": obj.get("height")})
    return rows, rejects, len(rows) + len(rejects)


def predict(path: str | Path, conn: Connection, model_version: str, out_dir: str | Path | None = None) -> dict:
    """Import the predictions for the project's tasks and make the project show them prefilled."""
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
            rejects.append({"image_id": row["image_id"], "stage": "predict", "reason": "no task with this image_id"})
            continue
        result = []
        for k, d in enumerate(row["defects"]):
            result += region_results(f"pred-{k}", d, row["width"], row["height"])
        payload.append({"task": tid, "model_version": model_version, "result": result})
    created = 0
    for i in range(0, len(payload), conn.cfg.chunk_size):
        chunk = payload[i : i + conn.cfg.chunk_size]
        resp = conn.call(
            "import predictions",
            lambda chunk=chunk: conn.client.projects.import_predictions(id=project.id, request=chunk),
        )
        got = getattr(resp, "created", None)
        if got != len(chunk):
            raise AnnotateError(f"import predictions: sent {len(chunk)}, the server created {got}")
        created += got
    if created:  # only once the server holds this model's predictions can the project show them
        ensure_project(conn, model_version=model_version)  # annotators see this model's boxes prefilled
    report = StageReport("predict", read=n, kept=created)
    for r in rejects:
        where = f"{path}:{r['line']}" if r.get("line") else str(path)
        report.reject(r["reason"], r.get("image_id"), where, None, line=r.get("line"))
    report.extras = {
        "project": project.id,
        "created": created,
        "model_version": model_version,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if not created:
        report.extras["note"] = "no usable prediction: nothing imported, the project's model version is unchanged"
    return report.write(Path(out_dir) if out_dir else path.parent, prefix=f"{path.stem}.")
