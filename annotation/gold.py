"""Gold tasks (honeypots): reference-annotated images mixed through every annotator's queue, and each annotator's
score against them.

``sdg annotate gold add GOLD.jsonl`` (:func:`annotation.queue.add_gold`) keeps the reference records on the lead's
machine (the gold store, never on the server, where every annotator could read it) and pushes their images as ordinary
tasks: the same task data, image URL form and metadata as any other task, no prefill of their own (the project's
prefill applies to them as to every task). On the server a gold task differs only in its overlap, raised so that every
annotator gets it, and in its place in the queue, which :mod:`annotation.queue` spreads through the others'. Pull
leaves gold annotations out of the dataset (they go to ``*.gold.jsonl``); status scores them.

An annotator's score is SDG-Eval with the gold record as ground truth and their annotation as the prediction: per
label DetTypeF1 and BoxF1@0.5, the description cosine of boxes matched at IoU >= 0.1 (with the eval's embedder) and
the importance error of boxes matched at IoU >= 0.5 with the same label, each with the number of gold tasks behind
it and a bootstrap interval over those tasks. The flag: at least ``gold_min_tasks`` gold tasks and a gold score (the
mean BoxF1@0.5 over the labels the gold holds) under ``gold_min_score``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from annotation.config import AnnotateConfig
from sdg_data.records import LABELS, ImageRecord


GOLD_OVERLAP = 1000  # annotations a gold task takes: more than any team, so the server hands it to everyone


def project_slug(cfg: AnnotateConfig) -> str:
    """The project's title as a file name: the gold store and the queue's priorities are one file per project."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", cfg.project_title).strip("-") or "project"


def gold_path(cfg: AnnotateConfig) -> Path:
    """The gold store of this project: ``gold_file``, else one file per project title in the work folder."""
    if cfg.gold_file:
        return Path(cfg.gold_file)
    return Path(cfg.work_dir) / "gold" / f"{project_slug(cfg)}.jsonl"


def read_gold(cfg: AnnotateConfig) -> dict[str, ImageRecord]:
    """image_id -> reference record; empty when the project has no gold (no store at the default place, or an empty
    file). A ``gold_file`` given but missing or not a regular file, or a store holding a record that is not
    annotated, is an error: read as "no gold", gold annotations would go into the dataset."""
    import os
    import stat

    from sdg_data.io.truth import load_ground_truth

    path = gold_path(cfg)
    if cfg.gold_file is None and not os.path.lexists(path):
        return {}
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ValueError(
            f"gold_file {path}: cannot be read ({exc.strerror}); give the gold store gold add wrote"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"gold_file {path}: not a regular file; give the gold store gold add wrote")
    if st.st_size == 0:
        return {}
    truth = load_ground_truth(path, stage="gold")
    if truth.rejects:
        bad = truth.rejects[0]
        raise ValueError(
            f"gold_file {path}: {len(truth.rejects)} record(s) not annotated (e.g. {bad.image_id}, {bad.where}): "
            "a gold task needs its reference boxes, or [] for a clean one"
        )
    return {r.image_id: r for r in truth.records}


_TELL = re.compile(r"gold|honeypot|reference|golden", re.IGNORECASE)


def telltale(rec: ImageRecord) -> str | None:
    """Why an annotator could tell this record is gold from what they see (its id and its file name are shown)."""
    for name in ("image_id", "image_path"):
        value = getattr(rec, name) or ""
        m = _TELL.search(Path(value).name if name == "image_path" else value)
        if m:
            return f"{name} {value!r} contains {m.group(0)!r}, which annotators see: rename it"
    return None


def split_gold(records: list[ImageRecord], gold_ids: set[str]) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """(ordinary annotations, annotations of gold tasks)."""
    ordinary, gold = [], []
    for r in records:
        (gold if r.image_id in gold_ids else ordinary).append(r)
    return ordinary, gold


# ------------------------------------------------------------------ scores
def score_against(
    refs: list[ImageRecord], anns: dict[str, ImageRecord], embedder: Any, draws: int, seed: int = 0
) -> dict[str, Any]:
    """SDG-Eval of ``anns`` (image_id -> annotation) against ``refs`` with bootstrap intervals over the images."""
    import numpy as np

    from sdg_data.scoring.evaluation import EvalConfig, bootstrap, evaluate

    rep = evaluate(refs, {k: v.defects for k, v in anns.items()}, EvalConfig(), embedder)
    ci = bootstrap(rep["per_image"], draws, seed) if draws else {}
    from annotation.agreement import importance_diffs

    diffs = [d for r in refs for ds in importance_diffs(r, anns[r.image_id]).values() for d in ds]
    out: dict[str, Any] = {"tasks": len(refs)}
    for lab in LABELS:
        out[lab] = {
            m: {"value": rep[lab].get(m), "ci95": (ci.get(lab) or {}).get(m)}
            for m in ("DetTypeF1", "BoxF1@0.5", "DescCos@0.1")
        }
        out[lab]["gold_boxes"] = rep["counts"][lab]["gt_boxes"]
    out["importance_mae"] = round(float(np.mean(diffs)), 2) if diffs else None
    out["matched_boxes"] = len(diffs)
    box = [out[lab]["BoxF1@0.5"]["value"] for lab in LABELS if out[lab]["gold_boxes"]]
    box = [v for v in box if v is not None]
    out["score"] = round(sum(box) / len(box), 4) if box else None
    return out


def gold_scores(
    gold: dict[str, ImageRecord], annotations: list[ImageRecord], cfg: AnnotateConfig, embedder: Any
) -> dict[str, dict[str, Any]]:
    """Per annotator: their latest annotation of each gold task they did, scored against the reference."""
    from annotation.consensus import latest_per_annotator

    mine: dict[str, dict[str, ImageRecord]] = defaultdict(dict)
    for iid, by_who in latest_per_annotator(r for r in annotations if r.image_id in gold).items():
        for who, rec in by_who.items():
            mine[who][iid] = rec
    out: dict[str, dict[str, Any]] = {}
    for who in sorted(mine):
        ids = sorted(mine[who])
        s = score_against([gold[i] for i in ids], mine[who], embedder, cfg.gold_bootstrap)
        s["flagged"] = bool(
            s["tasks"] >= cfg.gold_min_tasks and s["score"] is not None and s["score"] < cfg.gold_min_score
        )
        out[who] = s
    return out


def vote_weights(scores: dict[str, dict[str, Any]], cfg: AnnotateConfig) -> dict[str, float]:
    """Consensus weights from gold scores: an annotator with at least ``gold_min_tasks`` gold tasks weighs their
    score over the team's mean score (at least 0.05); everyone else weighs 1."""
    known = {w: s["score"] for w, s in scores.items() if s["score"] is not None and s["tasks"] >= cfg.gold_min_tasks}
    if not known:
        return {}
    mean = sum(known.values()) / len(known) or 1.0
    return {w: max(0.05, v / mean) for w, v in known.items()}


def format_gold(scores: dict[str, dict[str, Any]], rule: dict[str, Any]) -> list[str]:
    if not scores:
        return []

    def cell(s: dict[str, Any], lab: str, m: str) -> str:
        v = s[lab][m]
        if v["value"] is None:
            return "-"
        ci = v["ci95"]
        return f"{v['value']:.2f}" + (f" [{ci[0]:.2f}-{ci[1]:.2f}]" if ci else "")

    lines = [
        f"scores against gold (score: mean BoxF1@0.5 over labels; flagged below {rule['min_score']} after "
        f">= {rule['min_tasks']} gold tasks; [95% interval from {rule['bootstrap']} resamples]):",
        f"{'annotator':<30} {'tasks':>5} {'score':>6}  "
        + "  ".join(f"{lab[:5]} BoxF1@0.5 / DetTypeF1" for lab in LABELS)
        + "  DescCos  imp MAE",
    ]
    for who, s in scores.items():
        score = "-" if s["score"] is None else f"{s['score']:.3f}"
        per = "  ".join(f"{cell(s, lab, 'BoxF1@0.5')} / {cell(s, lab, 'DetTypeF1')}" for lab in LABELS)
        cos = [s[lab]["DescCos@0.1"]["value"] for lab in LABELS if s[lab]["DescCos@0.1"]["value"] is not None]
        desc = f"{sum(cos) / len(cos):.2f}" if cos else "-"
        imp = "-" if s["importance_mae"] is None else f"{s['importance_mae']:.1f}"
        flag = "  FLAGGED" if s["flagged"] else ""
        lines.append(f"{who[:30]:<30} {s['tasks']:>5} {score:>6}  {per}  {desc:>7}  {imp:>7}{flag}")
    return lines


# ------------------------------------------------------------------ the server
def raise_overlap(conn: Any, task_ids: list[int], overlap: int) -> int:
    """Set these tasks' overlap (and mark them not labeled, so the server hands them out again)."""
    from annotation.predictions import each

    each(
        conn, "raise a task's overlap", [(t, None) for t in task_ids],
        lambda tid, _: conn.get_json("update task", f"api/tasks/{tid}", method="PATCH",
                                     json={"overlap": overlap, "is_labeled": False}),
    )  # fmt: skip
    return len(task_ids)
