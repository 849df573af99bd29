"""``sdg annotate escalate``: one more annotator for the tasks whose annotators disagree.

A task's agreement is the mean, over its annotators' pairs (their latest annotations), of the symmetric box F1 that
status and disagreements use (boxes of one label matched one to one at IoU >= 0.5; two clean verdicts agree, a clean
verdict against boxes does not), reported with the pairs' importance gap. A task below ``escalate_below`` whose
annotators number fewer than ``escalate_max`` gets its overlap raised to their number plus one and is marked not
labeled, so the server hands it to one annotator who has not done it (verified on the real server by the tests).
Gold tasks are left alone (everyone does them already). Every decision, taken or not, is written with its reason.
"""

from __future__ import annotations

import statistics
from itertools import combinations
from pathlib import Path
from typing import Any

import orjson

from annotation.client import Connection, require_image_root, require_project
from annotation.consensus import bounded, latest_per_annotator
from annotation.gold import raise_overlap, read_gold
from annotation.lead import pair_agreement
from annotation.pull import convert_export, export_tasks, users_map


def plan(records: list, below: float, most: int, gold: set[str]) -> list[dict[str, Any]]:
    """One row per image with two or more annotators: its agreement and whether it gets one more (and why)."""
    rows = []
    for image_id, everyone in sorted(latest_per_annotator(records).items()):
        if len(everyone) < 2 or image_id in gold:
            continue
        by_who, _ = bounded(everyone)  # pairs grow with annotators squared: the earliest 20, as consensus takes
        if len(by_who) < 2:
            rows.append({
                "image_id": image_id, "task_id": next(iter(everyone.values())).provenance.get("task_id"),
                "agreement": None, "importance_gap": None, "annotators": sorted(everyone), "escalate": False,
                "new_overlap": None, "why": "fewer than 2 annotations to compare (the others are floods of boxes)",
            })  # fmt: skip
            continue
        pairs = [pair_agreement(by_who[a], by_who[b]) for a, b in combinations(sorted(by_who), 2)]
        f1 = statistics.fmean(p["box_f1"] for p in pairs)
        diffs = [d for p in pairs for d in p["importance_diffs"]]
        n = len(everyone)
        if f1 >= below:
            why, more = f"agreement {f1:.2f} >= {below}", False
        elif n >= most:
            why, more = f"agreement {f1:.2f} < {below}, but already {n} annotators (escalate_max {most})", False
        else:
            why, more = f"agreement {f1:.2f} < {below}: annotator {n + 1} of at most {most}", True
        rows.append({
            "image_id": image_id, "task_id": next(iter(everyone.values())).provenance.get("task_id"),
            "agreement": round(f1, 3), "importance_gap": round(statistics.fmean(diffs), 1) if diffs else None,
            "annotators": sorted(everyone), "escalate": more, "new_overlap": n + 1 if more else None, "why": why,
        })  # fmt: skip
    return rows


def escalate(conn: Connection, out: str | Path, dry_run: bool = False) -> dict[str, Any]:
    """Find the tasks below the threshold, raise their overlap on the server (unless ``dry_run``), write every
    row to ``out`` (JSONL)."""
    from annotation.server import document_root
    from sdg_data.io.files import write_bytes

    cfg = conn.cfg
    project = require_project(conn)
    require_image_root(conn, project)
    tasks = export_tasks(conn, project.id)
    result = convert_export(tasks, cfg, users_map(conn), document_root(cfg), one_per_image=False)
    rows = plan(result["all"], cfg.escalate_below, cfg.escalate_max, set(read_gold(cfg)))
    for r in rows:  # a task still waiting for the annotators its overlap asks for gets them anyway: never lowered
        if r["escalate"] and isinstance(r["task_id"], int):
            task = conn.get_json("read a task", f"api/tasks/{r['task_id']}", {"fields": "overlap"})
            current = task.get("overlap") if isinstance(task, dict) else None
            if isinstance(current, int) and current >= r["new_overlap"]:
                why = f"{r['why'].split(':')[0]}, but its overlap is already {current}: more annotators to come"
                r.update(escalate=False, new_overlap=None, why=why)
    chosen = [r for r in rows if r["escalate"] and isinstance(r["task_id"], int)]
    if not dry_run:
        by_overlap: dict[int, list[int]] = {}
        for r in chosen:
            by_overlap.setdefault(r["new_overlap"], []).append(r["task_id"])
        for overlap, ids in by_overlap.items():
            raise_overlap(conn, ids, overlap)
    write_bytes(Path(out), b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return {
        "project": project.id,
        "tasks_compared": len(rows),
        "escalated": 0 if dry_run else len(chosen),
        "would_escalate": len(chosen),
        "at_most_already": sum(1 for r in rows if not r["escalate"] and "already" in r["why"]),
        "threshold": cfg.escalate_below,
        "escalate_max": cfg.escalate_max,
        "dry_run": dry_run,
        "out": str(out),
        "rows": rows,
    }
