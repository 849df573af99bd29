"""What a lead needs to run an annotation team day to day, computed from an export (Label Studio Community has no
review workflow or team statistics): per-annotator throughput, lead time, skip rate, boxes per image and agreement
on overlap tasks; and the overlap tasks where annotators disagree most, to review first.

Agreement here is symmetric so that it can be given per annotator and per task: boxes of the same label are matched
one to one (Hungarian on IoU, IoU >= 0.5) and ``box_f1 = 2 * matched / (boxes_a + boxes_b)``; two clean verdicts
agree fully (1.0), a clean verdict against boxes not at all (0.0). ``sdg annotate agreement`` keeps the paper's
reference-based SDG-Eval figures for reporting.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from itertools import combinations
from typing import Any

from annotation.agreement import matched_boxes
from sdg_data.records import ImageRecord


SESSION_GAP_S = 20 * 60  # a pause longer than this between two submissions ends a work session


def parse_time(value: Any) -> datetime | None:
    """Label Studio's ISO times (``...Z`` or with an offset) as aware datetimes; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def pair_agreement(a: ImageRecord, b: ImageRecord) -> dict[str, Any]:
    """Two annotators on one image: matched boxes per label, symmetric box F1, importance differences."""
    if not a.defects and not b.defects:
        return {"box_f1": 1.0, "matched": 0, "boxes": (0, 0), "importance_diffs": [], "verdicts_differ": False}
    pairs = matched_boxes(a, b)
    matched = len(pairs)
    diffs = [
        abs(x.importance - y.importance) for _, x, y in pairs if x.importance is not None and y.importance is not None
    ]
    n = (len(a.defects), len(b.defects))
    return {
        "box_f1": 2 * matched / (n[0] + n[1]),
        "matched": matched,
        "boxes": n,
        "importance_diffs": diffs,
        "verdicts_differ": (n[0] == 0) != (n[1] == 0),
    }


def latest_per_annotator(records: Iterable[ImageRecord]) -> dict[str, dict[str, ImageRecord]]:
    """image_id -> annotator -> that annotator's latest annotation of it."""
    out: dict[str, dict[str, ImageRecord]] = defaultdict(dict)
    for r in records:
        who = r.provenance.get("annotator") or "unknown"
        prev = out[r.image_id].get(who)
        if prev is None or str(r.provenance.get("updated_at") or "") > str(prev.provenance.get("updated_at") or ""):
            out[r.image_id][who] = r
    return out


def _active_hours(times: list[datetime], median_lead_s: float) -> float:
    """Time spent at work: submissions closer than SESSION_GAP_S form a session; a session lasts from its first to
    its last submission plus one typical task (the first task's own time is before its submission)."""
    if not times:
        return 0.0
    times = sorted(times)
    total, start, last = 0.0, times[0], times[0]
    for t in times[1:]:
        if (t - last).total_seconds() > SESSION_GAP_S:
            total += (last - start).total_seconds() + median_lead_s
            start = t
        last = t
    total += (last - start).total_seconds() + median_lead_s
    return total / 3600


def annotator_stats(
    tasks: Iterable[Mapping[str, Any]],
    records: Iterable[ImageRecord],
    users: Mapping[int, str],
    since: datetime | None = None,
) -> dict[str, dict[str, Any]]:
    """Per annotator over the export's annotations (those created at or after ``since`` when given).

    ``records`` are the valid annotations as pull reads them (for boxes and agreement); skips come from the raw
    tasks, since a skipped annotation is not a record."""
    from annotation.pull import _user

    per: dict[str, dict[str, Any]] = defaultdict(lambda: {"done": 0, "skipped": 0, "times": [], "leads": []})
    for task in tasks:
        for ann in task.get("annotations") or []:
            if not isinstance(ann, Mapping):
                continue
            created = parse_time(ann.get("created_at"))
            if since is not None and (created is None or created < since):
                continue
            p = per[_user(ann.get("completed_by"), users) or "?"]
            if ann.get("was_cancelled"):
                p["skipped"] += 1
                continue
            p["done"] += 1
            if created is not None:
                p["times"].append(created)
            lead = ann.get("lead_time")
            if isinstance(lead, (int, float)) and lead >= 0:
                p["leads"].append(float(lead))
    kept = [r for r in records if since is None or (parse_time(r.provenance.get("created_at")) or since) >= since]
    boxes: dict[str, list[int]] = defaultdict(list)
    for r in kept:
        boxes[r.provenance.get("annotator") or "unknown"].append(len(r.defects))
    agree: dict[str, dict[str, list]] = defaultdict(lambda: {"f1": [], "imp": [], "verdict": []})
    for by_who in latest_per_annotator(kept).values():
        for a, b in combinations(sorted(by_who), 2):
            s = pair_agreement(by_who[a], by_who[b])
            for who in (a, b):
                agree[who]["f1"].append(s["box_f1"])
                agree[who]["imp"].extend(s["importance_diffs"])
                agree[who]["verdict"].append(not s["verdicts_differ"])
    out: dict[str, dict[str, Any]] = {}
    for who in sorted(set(per) | set(boxes)):
        p = per[who]
        median_lead = statistics.median(p["leads"]) if p["leads"] else None
        hours = _active_hours(p["times"], median_lead or 0.0)
        seen = p["done"] + p["skipped"]
        nb = boxes.get(who, [])
        ag = agree.get(who)
        out[who] = {
            "annotations": p["done"],
            "skipped": p["skipped"],
            "skip_rate": round(p["skipped"] / seen, 3) if seen else None,
            "tasks_per_hour": round(p["done"] / hours, 1) if hours > 0 else None,
            "active_hours": round(hours, 2),
            "median_lead_time_s": round(median_lead, 1) if median_lead is not None else None,
            "boxes_per_image": round(sum(nb) / len(nb), 2) if nb else None,
            "clean_share": round(sum(n == 0 for n in nb) / len(nb), 3) if nb else None,
            "overlap_images": len(ag["f1"]) if ag else 0,
            "agreement_box_f1": round(statistics.fmean(ag["f1"]), 3) if ag and ag["f1"] else None,
            "agreement_verdict": round(statistics.fmean(ag["verdict"]), 3) if ag and ag["verdict"] else None,
            "importance_mae": round(statistics.fmean(ag["imp"]), 1) if ag and ag["imp"] else None,
            "last_submission": max(p["times"]).isoformat() if p["times"] else None,
        }
    return out


def disagreements(records: Iterable[ImageRecord], task_url: str | None = None) -> list[dict[str, Any]]:
    """Overlap images, the most disputed first: ``disagreement = 1 - mean pairwise box F1`` (a clean verdict against
    boxes counts as full disagreement), ties broken by the importance gap and the number of boxes. Each row says who
    annotated, how many boxes each drew, and where to open the task."""
    rows = []
    for image_id, by_who in latest_per_annotator(records).items():
        if len(by_who) < 2:
            continue
        pairs = [(a, b, pair_agreement(by_who[a], by_who[b])) for a, b in combinations(sorted(by_who), 2)]
        f1 = statistics.fmean(s["box_f1"] for _, _, s in pairs)
        diffs = [d for _, _, s in pairs for d in s["importance_diffs"]]
        any_rec = next(iter(by_who.values()))
        task_id = any_rec.provenance.get("task_id")
        rows.append(
            {
                "image_id": image_id,
                "task_id": task_id,
                "disagreement": round(1 - f1, 3),
                "mean_box_f1": round(f1, 3),
                "verdicts_differ": any(s["verdicts_differ"] for _, _, s in pairs),
                "importance_mae": round(statistics.fmean(diffs), 1) if diffs else None,
                "annotators": {who: len(r.defects) for who, r in sorted(by_who.items())},
                "pairs": [
                    {"a": a, "b": b, "box_f1": round(s["box_f1"], 3), "matched": s["matched"]} for a, b, s in pairs
                ],  # fmt: skip
                "url": task_url.format(task_id=task_id) if task_url and task_id is not None else None,
            }
        )
    rows.sort(key=lambda r: (-r["disagreement"], -(r["importance_mae"] or 0), -sum(r["annotators"].values())))
    return rows


def format_annotators(stats: Mapping[str, Mapping[str, Any]]) -> list[str]:
    head = (
        f"{'annotator':<30} {'done':>5} {'skip%':>6} {'tasks/h':>7} {'med s':>6} {'boxes/img':>9} {'clean%':>6} "
        f"{'overlap':>7} {'agreeF1':>7} {'imp MAE':>7}"
    )

    def f(v, spec):
        return "-" if v is None else format(v, spec)

    lines = [head]
    for who, s in stats.items():
        skip = None if s["skip_rate"] is None else 100 * s["skip_rate"]
        clean = None if s["clean_share"] is None else 100 * s["clean_share"]
        lines.append(
            f"{who[:30]:<30} {s['annotations']:>5} {f(skip, '.1f'):>6} {f(s['tasks_per_hour'], '.1f'):>7} "
            f"{f(s['median_lead_time_s'], '.0f'):>6} {f(s['boxes_per_image'], '.2f'):>9} {f(clean, '.0f'):>6} "
            f"{s['overlap_images']:>7} {f(s['agreement_box_f1'], '.3f'):>7} {f(s['importance_mae'], '.1f'):>7}"
        )
    return lines
