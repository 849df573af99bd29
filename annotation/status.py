"""``sdg annotate status`` and ``sdg annotate disagreements``: where the annotation stands, per annotator, and which
overlap tasks to review first. Both read one export (a snapshot from the server, or a file from the UI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from annotation.client import Connection, require_image_root, require_project
from annotation.config import AnnotateConfig
from annotation.lead import (
    annotator_stats,
    disagreements,
    format_annotators,
    format_prefill,
    parse_time,
    prefill_stats,
)
from annotation.pull import convert_export, export_tasks, users_map
from annotation.push import task_count


def _export(conn: Connection | None, cfg: AnnotateConfig, from_export: Path | None):
    """(tasks with annotations, users, project or None, url template of a task or None, number of tasks)."""
    if from_export is not None:
        tasks = orjson.loads(Path(from_export).read_bytes())
        if not isinstance(tasks, list):
            raise ValueError(f"{from_export}: a Label Studio JSON export is a list of tasks")
        return tasks, {}, None, None, len(tasks)  # a UI export has every task only if it was asked for all
    assert conn is not None
    project = require_project(conn)
    require_image_root(conn, project)  # the same image checks as pull, so the counts agree
    url = f"{cfg.url.rstrip('/')}/projects/{project.id}/data?tab=1&task={{task_id}}"
    # the snapshot holds only tasks with annotations; the project's total comes from the server
    tasks = export_tasks(conn, project.id, with_predictions=True)
    return tasks, users_map(conn), project, url, task_count(conn, project.id)


def status(
    conn: Connection | None, cfg: AnnotateConfig, since: str | None = None, from_export: Path | None = None
) -> dict[str, Any]:
    since_t = None
    if since:
        since_t = parse_time(since)
        if since_t is None:
            raise ValueError(f"--since {since!r}: not an ISO time (e.g. 2026-11-30T08:00:00Z)")
    tasks, users, project, _, n_tasks = _export(conn, cfg, from_export)
    result = convert_export(tasks, cfg, users, _doc_root(cfg), one_per_image=False)
    gold = _gold(result, cfg)
    overlap, overlap_from = _overlap(project, cfg, tasks)
    annotated = complete = clean = skipped_only = 0
    for t in tasks:
        if not isinstance(t, dict):  # a malformed task: convert_export counts it
            continue
        raw = t.get("annotations")
        anns = [a for a in raw if isinstance(a, dict)] if isinstance(raw, list) else []
        done = [a for a in anns if a.get("was_cancelled") is not True]
        if done:
            annotated += 1
            complete += len(done) >= overlap
            clean += all(not (a.get("result") or []) for a in done)
        elif anns:
            skipped_only += 1
    return {
        "project": getattr(project, "id", None),
        "overlap": overlap,
        "overlap_from": overlap_from,
        "tasks": n_tasks,
        "annotated": annotated,
        "complete": complete,
        "clean": clean,
        "skipped_only": skipped_only,
        "remaining": n_tasks - annotated - skipped_only,
        "rejected_annotations": result["counts"]["rejected"],
        "since": since,
        "annotators": annotator_stats(tasks, result["all"], users, since_t),
        "prefill": prefill_stats(tasks),
        "gold": gold,
    }


def _gold(result: dict[str, Any], cfg: AnnotateConfig) -> dict[str, Any] | None:
    """Each annotator's score against the gold tasks (None when the project has no gold)."""
    from annotation.gold import gold_path, gold_scores
    from sdg_data.scoring.embedding import load_embedder

    ref = result["gold_reference"]
    if not ref:
        return None
    scores = gold_scores(ref, result["gold"], cfg, load_embedder(cfg.embedder) if result["gold"] else None)
    return {
        "store": str(gold_path(cfg)),
        "gold_tasks": len(ref),
        "annotations": len(result["gold"]),
        "embedder": cfg.embedder,
        "annotators": scores,
        "flagged": sorted(w for w, s in scores.items() if s["flagged"]),
        "rule": {"min_score": cfg.gold_min_score, "min_tasks": cfg.gold_min_tasks, "bootstrap": cfg.gold_bootstrap},
    }


def _overlap(project: Any, cfg: AnnotateConfig, tasks: list) -> tuple[int, str]:
    """Annotators per task and where that figure comes from: the project on the server, --overlap, or (an export
    file alone) the most annotations any task of it holds."""
    if getattr(project, "maximum_annotations", None):
        return int(project.maximum_annotations), "the project"
    if cfg.overlap:
        return cfg.overlap, "--overlap or the recipe"
    most = max((len(t.get("annotations") or []) for t in tasks if isinstance(t, dict)), default=1)
    return max(1, most), "the export (the most annotations a task holds; give --overlap to say it)"


def _doc_root(cfg: AnnotateConfig) -> Path | None:
    """The document root when the image root is known (checks as pull does), else None (no file checks)."""
    from annotation.server import document_root

    return document_root(cfg) if cfg.image_root is not None else None


def format_status(s: dict[str, Any]) -> str:
    where = f"project {s['project']}" if s["project"] is not None else "export"
    lines = [
        f"{where} (overlap {s['overlap']}, from {s.get('overlap_from', 'the project')}): {s['tasks']} tasks, "
        f"{s['annotated']} annotated ({s['clean']} clean, "
        f"{s['complete']} with all {s['overlap']} annotations), {s['skipped_only']} only skipped, "
        f"{s['remaining']} to do; {s['rejected_annotations']} annotations fail validation (pull lists them)",
    ]
    if s["since"]:
        lines.append(f"annotators since {s['since']}:")
    lines += format_annotators(s["annotators"])
    lines += format_prefill(s["prefill"])
    if s.get("gold"):
        from annotation.gold import format_gold

        g = s["gold"]
        lines.append(f"{g['gold_tasks']} gold tasks ({g['store']}), {g['annotations']} gold annotations")
        lines += format_gold(g["annotators"], g["rule"])
    return "\n".join(lines)


def disagreement_list(
    conn: Connection | None, cfg: AnnotateConfig, out: Path, top: int, from_export: Path | None = None
) -> dict[str, Any]:
    """Write every overlap image's row to OUT (JSONL, most disputed first); return the top rows and counts."""
    from sdg_data.io.files import write_bytes

    tasks, users, _, url, _ = _export(conn, cfg, from_export)
    rows = disagreements(convert_export(tasks, cfg, users, _doc_root(cfg))["all"], url)
    write_bytes(out, b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return {"overlap_images": len(rows), "disputed": sum(r["disagreement"] > 0 for r in rows), "top": rows[:top]}


def format_disagreements(s: dict[str, Any], out: Path) -> str:
    lines = [f"{s['overlap_images']} images with several annotators, {s['disputed']} not in full agreement -> {out}"]
    for r in s["top"]:
        who = ", ".join(f"{k}: {v}" for k, v in r["annotators"].items())
        imp = "" if r["importance_mae"] is None else f", importance gap {r['importance_mae']}"
        where = r["url"] or f"task {r['task_id']}"
        lines.append(f"{r['disagreement']:.2f}  {r['image_id']}  boxes {{{who}}}{imp}  {where}")
    return "\n".join(lines)
