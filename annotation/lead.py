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
from annotation.consensus import latest_per_annotator
from annotation.predictions import QUEUE_SUFFIX
from sdg_data.records import ImageRecord, is_id


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
        for ann in _listed(task, "annotations"):
            if not isinstance(ann, Mapping):
                continue
            created = parse_time(ann.get("created_at"))
            if since is not None and (created is None or created < since):
                continue
            p = per[_user(ann.get("completed_by"), users) or "?"]
            if ann.get("was_cancelled") is True:
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


# ------------------------------------------------------------------ what prefill is worth
def _listed(obj: Any, key: str) -> list[Any]:
    """``obj[key]`` when ``obj`` is a mapping and that is a list, else [] (an export edited by hand or another tool
    is read as far as it has the expected shape; pull names what it cannot use)."""
    value = obj.get(key) if isinstance(obj, Mapping) else None
    return value if isinstance(value, list) else []


def _number(value: Any) -> float | None:
    return round(float(value), 4) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _regions(result: Any) -> dict[str, dict[str, Any]]:
    """Region id -> its label, box (x, y, w, h in percent), description and importance, from an editor result."""
    from annotation.labeling import BOX, NUMBER, TEXT

    out: dict[str, dict[str, Any]] = {}
    for r in result if isinstance(result, list) else []:
        if not isinstance(r, Mapping) or "id" not in r:
            continue
        reg = out.setdefault(str(r["id"]), {})
        v = r.get("value") if isinstance(r.get("value"), Mapping) else {}
        name = r.get("from_name")
        if name == BOX:
            reg["box"] = tuple(_number(v.get(k)) for k in ("x", "y", "width", "height"))
            labels = v.get("rectanglelabels")
            reg["label"] = tuple(map(str, labels)) if isinstance(labels, list) else (str(labels),)
        elif name == TEXT:
            reg["text"] = tuple(v.get("text") or ()) if isinstance(v.get("text"), list) else (v.get("text"),)
        elif name == NUMBER:
            reg["number"] = v.get("number")
    return out


def _median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 1) if xs else None


def prefill_stats(tasks: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Per model version whose predictions annotators started from (an annotation's ``parent_prediction``): each
    predicted box kept as predicted, moved or resized, kept in place with its label or text changed, or deleted;
    boxes added by hand; the share of prefilled tasks submitted unchanged; the median lead time with that prefill
    against annotations started from an empty canvas. The figure a lead needs to judge whether a detector helps."""
    by_version: dict[str, dict[str, Any]] = {}
    no_prefill_leads: list[float] = []
    for task in tasks:
        if not isinstance(task, Mapping):
            continue
        preds = {p["id"]: p for p in _listed(task, "predictions") if isinstance(p, Mapping) and is_id(p.get("id"))}
        for ann in _listed(task, "annotations"):
            if not isinstance(ann, Mapping) or ann.get("was_cancelled") is True:
                continue
            lead = ann.get("lead_time")
            lead = float(lead) if isinstance(lead, (int, float)) and not isinstance(lead, bool) and lead >= 0 else None
            parent = preds.get(ann["parent_prediction"]) if is_id(ann.get("parent_prediction")) else None
            version = str((parent or {}).get("model_version") or "?")
            if parent is not None and version.endswith(QUEUE_SUFFIX):  # the queue's place holder (annotation.queue)
                version = version.removesuffix(QUEUE_SUFFIX)
                parent = parent if parent.get("result") else None  # no prefill behind it: an empty canvas
            if parent is None:
                if lead is not None:
                    no_prefill_leads.append(lead)
                continue
            v = by_version.setdefault(
                version,
                {"annotations": 0, "unchanged": 0, "predicted_boxes": 0, "kept": 0, "moved": 0, "edited": 0,
                 "deleted": 0, "added": 0, "leads": []},
            )  # fmt: skip
            predicted, drawn = _regions(parent.get("result")), _regions(ann.get("result"))
            counts = {"kept": 0, "moved": 0, "edited": 0, "deleted": 0}
            for rid, p in predicted.items():
                a = drawn.get(rid)
                if a is None:
                    counts["deleted"] += 1
                elif a.get("box") != p.get("box"):
                    counts["moved"] += 1
                elif any(a.get(k) != p.get(k) for k in ("label", "text", "number")):
                    counts["edited"] += 1
                else:
                    counts["kept"] += 1
            added = sum(rid not in predicted for rid in drawn)
            v["annotations"] += 1
            v["predicted_boxes"] += len(predicted)
            v["added"] += added
            for k, n in counts.items():
                v[k] += n
            v["unchanged"] += counts["kept"] == len(predicted) and not added
            if lead is not None:
                v["leads"].append(lead)
    out = {}
    for version, v in sorted(by_version.items()):
        n_boxes = v["predicted_boxes"]
        out[version] = {
            **{k: v[k] for k in ("annotations", "predicted_boxes", "kept", "moved", "edited", "deleted", "added")},
            "kept_share": round(v["kept"] / n_boxes, 3) if n_boxes else None,
            "unchanged_share": round(v["unchanged"] / v["annotations"], 3) if v["annotations"] else None,
            "median_lead_time_s": _median(v["leads"]),
        }
    return {"versions": out, "without_prefill": {"annotations": len(no_prefill_leads),
                                                  "median_lead_time_s": _median(no_prefill_leads)}}  # fmt: skip


def format_prefill(p: Mapping[str, Any]) -> list[str]:
    if not p["versions"]:
        return []
    base = p["without_prefill"]
    lines = [
        "prefill by model version (predicted boxes kept / moved / edited / deleted; boxes added by hand; tasks "
        f"submitted unchanged; median lead time against {base['median_lead_time_s'] or '-'} s over "
        f"{base['annotations']} annotations started empty):"
    ]
    for version, s in p["versions"].items():
        kept = "-" if s["kept_share"] is None else f"{100 * s['kept_share']:.0f}%"
        same = "-" if s["unchanged_share"] is None else f"{100 * s['unchanged_share']:.0f}%"
        lines.append(
            f"  {version[:30]:<30} {s['annotations']:>5} tasks, {s['predicted_boxes']} boxes: kept {s['kept']} "
            f"({kept}), moved {s['moved']}, edited {s['edited']}, deleted {s['deleted']}, added {s['added']}; "
            f"unchanged {same}; median {s['median_lead_time_s'] if s['median_lead_time_s'] is not None else '-'} s"
        )
    return lines
