"""``sdg stats``: what a built dataset holds (composition, boxes, importance, sizes, description lengths, teacher
rejects) as a terminal table and an HTML report with PNG plots."""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from sdg_data.records import LABELS, ImageRecord, count_words


COMPOSITION = ("clean", "artifact-only", "misalignment-only", "both")


def _kind(r: ImageRecord) -> str:
    labels = {d.label for d in r.defects}
    if not labels:
        return "clean"
    return "both" if len(labels) == 2 else f"{next(iter(labels))}-only"


def _read_jsonl(p: Path) -> list[dict[str, Any]]:
    if not p.exists():
        return []
    from sdg_data.jsonl import iter_lines

    return [obj for _, obj in iter_lines(p) if isinstance(obj, dict)]


def dataset_stats(folder: str | Path) -> dict[str, Any]:
    from sdg_data.arrow import read_parquet_records

    folder = Path(folder)
    shards = folder / "data" / "annotations"
    if not shards.is_dir():
        raise FileNotFoundError(f"{folder}: not a dataset built by sdg build (no data/annotations/)")
    recs = read_parquet_records(shards)
    gens = sorted({r.generator or "unknown" for r in recs})
    comp = Counter(_kind(r) for r in recs)
    per_gen: dict[str, dict[str, Any]] = {}
    for g in gens:
        rs = [r for r in recs if (r.generator or "unknown") == g]
        per_gen[g] = {
            "images": len(rs),
            **{
                f"{lab}_per_image": round(sum(len(r.defects_of(lab)) for r in rs) / max(1, len(rs)), 3)
                for lab in LABELS
            },
        }
    defects = [d for r in recs for d in r.defects]
    imps = [d.importance for d in defects if d.importance is not None]
    areas = [d.box.area_share for d in defects]
    words = [count_words(d.description) for d in defects]
    from sdg_data.report import stage_files

    rejects = []  # every stage's rejects that travelled with the dataset (generate, pull, distill, build, ...)
    for stage, found in stage_files(folder / "meta").items():
        for r in _read_jsonl(found["rejects"]) if "rejects" in found else []:
            rejects.append({**r, "stage": r.get("stage") or stage})
    reasons = Counter((r.get("stage", "?"), str(r.get("reason", ""))[:90]) for r in rejects)
    return {
        "images": len(recs),
        "splits": dict(Counter(r.split for r in recs)),
        "composition": {k: comp[k] for k in COMPOSITION},
        "composition_pct": {k: round(100 * comp[k] / max(1, len(recs)), 1) for k in COMPOSITION},
        "by_generator": per_gen,
        "defects": {lab: sum(d.label == lab for d in defects) for lab in LABELS},
        "importance_histogram": np.histogram(imps, bins=10, range=(0.5, 100.5))[0].tolist() if imps else [],
        "importance_missing": len(defects) - len(imps),
        "importance_mean": round(float(np.mean(imps)), 2) if imps else None,
        "box_area_share_quantiles": _quantiles(areas),
        "description_words_quantiles": _quantiles(words),
        "rejects": {
            "total": len(rejects),
            "by_stage": dict(Counter(r.get("stage", "?") for r in rejects)),
            "top_reasons": [{"stage": s, "reason": why, "count": n} for (s, why), n in reasons.most_common(10)],
        },
        "_raw": {"rows": [(d.label, d.importance, a, w) for d, a, w in zip(defects, areas, words)]},
    }


def _quantiles(xs: list[float]) -> dict[str, float] | None:
    if not xs:
        return None
    q = np.quantile(np.asarray(xs, dtype=float), [0.0, 0.25, 0.5, 0.75, 1.0])
    return dict(zip(("min", "p25", "median", "p75", "max"), (round(float(v), 4) for v in q)))


def format_stats(s: dict[str, Any]) -> str:
    lines = [f"images: {s['images']}  splits: {s['splits']}", "", "composition:"]
    for k in COMPOSITION:
        lines.append(f"  {k:<18} {s['composition'][k]:>7}  {s['composition_pct'][k]:5.1f}%")
    lines += ["", f"  {'generator':<20} {'images':>7} {'artifact/img':>13} {'misalign/img':>13}"]
    for g, v in s["by_generator"].items():
        lines.append(
            f"  {g:<20} {v['images']:>7} {v['artifact_per_image']:>13.2f} {v['misalignment_per_image']:>13.2f}"
        )
    lines += [
        "",
        f"defects: {s['defects']}  importance mean {s['importance_mean']} (missing {s['importance_missing']})",
        f"importance histogram (1-10 .. 91-100): {s['importance_histogram']}",
        f"box area share quantiles: {s['box_area_share_quantiles']}",
        f"description words quantiles: {s['description_words_quantiles']}",
        f"rejects: {s['rejects']['total']} by stage {s['rejects']['by_stage']}",
    ]
    for r in s["rejects"]["top_reasons"][:5]:
        lines.append(f"  {r['count']:>5} [{r['stage']}] {r['reason']}")
    return "\n".join(lines)


def write_report(s: dict[str, Any], out_html: str | Path) -> Path:
    """The HTML report and its PNG plots (in ``<name>_files/`` beside it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_html = Path(out_html)
    assets = out_html.parent / f"{out_html.stem}_files"
    assets.mkdir(parents=True, exist_ok=True)
    raw = s["_raw"]
    plots = []

    def save(fig, name: str, title: str) -> None:
        fig.tight_layout()
        fig.savefig(assets / name, dpi=90)
        plt.close(fig)
        plots.append((title, f"{assets.name}/{name}"))

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(COMPOSITION, [s["composition_pct"][k] for k in COMPOSITION], color=["#7a7", "#d55", "#55d", "#a5a"])
    ax.set_ylabel("% of images")
    save(fig, "composition.png", "Composition")
    fig, ax = plt.subplots(figsize=(6, 3))
    gens = list(s["by_generator"])
    x = np.arange(len(gens))
    for k, lab in enumerate(LABELS):
        ax.bar(x + 0.4 * k - 0.2, [s["by_generator"][g][f"{lab}_per_image"] for g in gens], 0.4, label=lab)
    ax.set_xticks(x, gens, rotation=15, fontsize=8)
    ax.set_ylabel("boxes per image")
    ax.legend()
    save(fig, "boxes_by_generator.png", "Boxes per image by generator and label")
    rows = raw["rows"]  # (label, importance, area share, words) per defect
    for col, name, title, bins in (
        (1, "importance.png", "Importance", np.arange(0.5, 101, 5)),
        (2, "box_area.png", "Box area (share of the image)", 30),
        (3, "description_words.png", "Description length (words)", 30),
    ):
        fig, ax = plt.subplots(figsize=(5, 3))
        for lab in LABELS:
            vals = [r[col] for r in rows if r[0] == lab and r[col] is not None]
            if vals:
                ax.hist(vals, bins=bins, alpha=0.6, label=lab)
        ax.legend()
        save(fig, name, title)
    table = html.escape(format_stats(s))
    imgs = "\n".join(f"<h3>{html.escape(t)}</h3><img src='{p}' alt='{html.escape(t)}'>" for t, p in plots)
    out_html.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>SDG dataset report</title></head><body>"
        f"<h1>SDG dataset report</h1><pre>{table}</pre>{imgs}</body></html>",
        encoding="utf-8",
    )
    return out_html
