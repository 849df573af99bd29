"""``sdg annotate status``: where the annotation stands, overall and per annotator."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from annotation.client import Connection, require_project
from annotation.pull import _user, export_tasks, users_map
from annotation.push import server_tasks


def status(conn: Connection) -> dict[str, Any]:
    project = require_project(conn)
    n_tasks = len(server_tasks(conn, project.id))
    users = users_map(conn)
    tasks = export_tasks(conn, project.id)
    annotated = clean = skipped_only = 0
    per: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for t in tasks:
        done = [a for a in t.get("annotations") or [] if not a.get("was_cancelled")]
        if done:
            annotated += 1
            clean += all(not (a.get("result") or []) for a in done)
        elif t.get("annotations"):
            skipped_only += 1
        for a in t.get("annotations") or []:
            who = _user(a.get("completed_by"), users) or "?"
            p = per[who]
            if a.get("was_cancelled"):
                p["skipped"] += 1
                continue
            p["annotations"] += 1
            regions = {r.get("id") for r in a.get("result") or []}
            p["boxes"] += len(regions)
            p["clean"] += not regions
            p["lead_time_s"] += float(a.get("lead_time") or 0.0)
    annotators = {
        who: {
            "annotations": int(p["annotations"]),
            "clean": int(p["clean"]),
            "skipped": int(p["skipped"]),
            "boxes": int(p["boxes"]),
            "mean_lead_time_s": round(p["lead_time_s"] / p["annotations"], 1) if p["annotations"] else None,
        }
        for who, p in sorted(per.items())
    }
    return {
        "project": project.id,
        "overlap": project.maximum_annotations,
        "tasks": n_tasks,
        "annotated": annotated,
        "clean": clean,
        "skipped_only": skipped_only,
        "remaining": n_tasks - annotated - skipped_only,
        "annotators": annotators,
    }


def format_status(s: dict[str, Any]) -> str:
    lines = [
        f"project {s['project']} (overlap {s['overlap']}): {s['tasks']} tasks, {s['annotated']} annotated "
        f"({s['clean']} clean), {s['skipped_only']} only skipped, {s['remaining']} to do",
        f"{'annotator':<36} {'annotations':>11} {'clean':>6} {'skipped':>8} {'boxes':>6} {'mean s':>7}",
    ]
    for who, a in s["annotators"].items():
        mean = "-" if a["mean_lead_time_s"] is None else f"{a['mean_lead_time_s']:.1f}"
        lines.append(
            f"{who[:36]:<36} {a['annotations']:>11} {a['clean']:>6} {a['skipped']:>8} {a['boxes']:>6} {mean:>7}"
        )
    return "\n".join(lines)
