"""``sdg annotate agreement``: how far annotators agree, in the paper's human-agreement terms.

For each pair of annotators (in sorted order), over the images both annotated: the first is the reference and the
second the prediction, scored with the core SDG-Eval exactly as the paper scored its 16 re-annotators against the
primary labels (per label DetTypeF1 and BoxF1@0.5 on reference-positive images, class-aware Hungarian matching on
IoU), plus the mean absolute importance difference over boxes matched at IoU >= 0.5 with the same label.
"overall" pools every pair's images.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from sdg_data.io.files import write_json
from sdg_data.records import LABELS, Defect, ImageRecord
from sdg_data.scoring.evaluation import EvalConfig, evaluate
from sdg_data.scoring.table import MAX_BOXES  # boxes per annotation compared, as sdg eval's default
from sdg_data.scoring.uncertainty import matched_defects


def matched_boxes(a: ImageRecord, b: ImageRecord) -> list[tuple[str, Defect, Defect]]:
    """Two annotations of one image: (label, a's box, b's box) for boxes of the same label matched one to one by
    Hungarian matching on IoU, kept at IoU >= 0.5."""
    return matched_defects(a.defects, b.defects)


def importance_diffs(a: ImageRecord, b: ImageRecord) -> dict[str, list[float]]:
    """Per label, the importance gaps of the boxes :func:`matched_boxes` pairs (both with an importance)."""
    out: dict[str, list[float]] = defaultdict(list)
    for label, da, db in matched_boxes(a, b):
        if da.importance is not None and db.importance is not None:
            out[label].append(abs(da.importance - db.importance))
    return out


def _scores(refs: list[ImageRecord], others: dict[str, ImageRecord], embedder: Any = None) -> dict[str, Any]:
    rep = evaluate(refs, {k: v.defects for k, v in others.items()}, EvalConfig(), embedder=embedder)
    out: dict[str, Any] = {"images": len(refs)}
    diffs: dict[str, list[float]] = defaultdict(list)
    for r in refs:
        for label, d in importance_diffs(r, others[r.image_id]).items():
            diffs[label].extend(d)
    for label in LABELS:
        m = rep[label]
        out[label] = {
            "BoxF1@0.5": m.get("BoxF1@0.5"),
            "DetTypeF1": m.get("DetTypeF1"),
            "importance_MAE": float(np.mean(diffs[label])) if diffs[label] else None,
            "DescCos@0.1": m.get("DescCos@0.1"),
            "matched_pairs": len(diffs[label]),
        }
    return out


MAX_ANNOTATORS_PER_IMAGE = 20  # the pairs of one image grow with its annotators squared


def agreement(
    all_records: list[ImageRecord], max_per_image: int = MAX_ANNOTATORS_PER_IMAGE, embedder: Any = None
) -> dict[str, Any]:
    """Per annotator pair and overall (pooled), per label, and each annotator against the consensus of the others
    on the images they share (:func:`versus_consensus`). A record whose annotator is not a name is left out and
    counted; an image with more than ``max_per_image`` annotators is left out and counted (its pairs alone would
    cost ``n^2`` scorings). With an embedder, the matched boxes' description cosine (DescCos@0.1) is added."""
    usable, bad_annotator, crowded_records = [], 0, 0
    for r in all_records:
        who = r.provenance.get("annotator")
        if who is not None and not isinstance(who, str):
            bad_annotator += 1
            continue
        if len(r.defects) > MAX_BOXES:  # matching is quadratic in boxes: a flood is left out, counted
            crowded_records += 1
            continue
        usable.append(r)
    per_image: dict[str, set[str]] = defaultdict(set)
    for r in usable:
        per_image[r.image_id].add(r.provenance.get("annotator") or "unknown")
    crowded = {i for i, who in per_image.items() if len(who) > max_per_image}
    by_annotator: dict[str, dict[str, ImageRecord]] = defaultdict(dict)
    for r in usable:
        if r.image_id in crowded:
            continue
        who = r.provenance.get("annotator") or "unknown"
        prev = by_annotator[who].get(r.image_id)
        # one annotation per annotator and image: the latest
        if prev is None or str(r.provenance.get("updated_at") or "") > str(prev.provenance.get("updated_at") or ""):
            by_annotator[who][r.image_id] = r
    pairs: dict[str, Any] = {}
    pooled_ref: list[ImageRecord] = []
    pooled_other: dict[str, ImageRecord] = {}
    for a, b in combinations(sorted(by_annotator), 2):
        shared = sorted(set(by_annotator[a]) & set(by_annotator[b]))
        if not shared:
            continue
        refs = [by_annotator[a][i] for i in shared]
        others = {i: by_annotator[b][i] for i in shared}
        pairs[f"{a} | {b}"] = _scores(refs, others, embedder)
        for i in shared:  # pooled: each pair's images under a pair-unique id
            key = f"{a}|{b}|{i}"
            ref = ImageRecord.from_json({**by_annotator[a][i].to_json(), "image_id": key})
            pooled_ref.append(ref)
            pooled_other[key] = ImageRecord.from_json({**by_annotator[b][i].to_json(), "image_id": key})
    overall = _scores(pooled_ref, pooled_other, embedder) if pooled_ref else None
    return {
        "left_out": {
            "records_with_an_annotator_that_is_not_a_name": bad_annotator,
            f"records_with_more_than_{MAX_BOXES}_boxes": crowded_records,
            f"images_with_more_than_{max_per_image}_annotators": len(crowded),
        },
        "annotators": {k: len(v) for k, v in sorted(by_annotator.items())},
        "pairs": pairs,
        "overall": overall,
        "versus_consensus": versus_consensus(by_annotator, embedder),
        "embedder": getattr(embedder, "name", None),
        "paper_human_reference": {"artifact": {"BoxF1@0.5": 0.278}, "misalignment": {"BoxF1@0.5": 0.409}},
    }


def versus_consensus(by_annotator: dict[str, dict[str, ImageRecord]], embedder: Any = None) -> dict[str, Any]:
    """Each annotator scored against the consensus of the others (majority of them, IoU 0.5) on every image they share
    with at least one other and where the others reach a verdict: SDG-Eval with it as ground truth. Leaving the
    annotator out of their own reference keeps a lone dissenter from agreeing with themselves."""
    from annotation.consensus import consensus_record

    per_image: dict[str, dict[str, ImageRecord]] = defaultdict(dict)
    for who, recs in by_annotator.items():
        for iid, r in recs.items():
            per_image[iid][who] = r
    out: dict[str, Any] = {}
    for who in sorted(by_annotator):
        refs, mine = [], {}
        for iid, r in by_annotator[who].items():
            others = {k: v for k, v in per_image[iid].items() if k != who}
            ref = consensus_record(others) if others else None
            if ref is not None and "unresolved" not in ref.provenance["consolidation"]:  # no verdict: not clean
                refs.append(ref)
                mine[iid] = r
        if refs:
            out[who] = _scores(refs, mine, embedder)
    return out


def agreement_file(
    all_path: str | Path,
    out: str | Path | None = None,
    max_per_image: int = MAX_ANNOTATORS_PER_IMAGE,
    embedder: str | None = "lexical",
) -> dict[str, Any]:
    """Agreement over the annotated records of a records file (several per image); records not annotated yet
    are left out and counted (``not_annotated``), never compared as clean."""
    from sdg_data.io.truth import load_ground_truth
    from sdg_data.scoring.embedding import load_embedder

    truth = load_ground_truth(all_path, stage="agreement", unique=False)
    report = agreement(truth.records, max_per_image, load_embedder(embedder))
    report["ground_truth"] = truth.source
    if out:
        write_json(out, report)
    return report


def format_agreement(report: dict[str, Any]) -> str:
    lines = [f"annotators: {report['annotators']}"]
    keys = ("BoxF1@0.5", "DetTypeF1", "importance_MAE", "DescCos@0.1")  # the JSON's names
    head = f"{'pair':<44} {'images':>6} | " + " | ".join(
        f"{lab[:5]:<6} " + " ".join(f"{k:>14}" for k in keys) for lab in LABELS
    )
    lines += [head, "-" * len(head)]
    rows = list(report["pairs"].items()) + ([("overall", report["overall"])] if report["overall"] else [])
    rows += [(f"{who} vs the others' consensus", s) for who, s in report.get("versus_consensus", {}).items()]

    def f(v):
        return f"{'-':>14}" if v is None else f"{v:14.3f}"

    for name, s in rows:
        cells = " | ".join(f"{'':<6} " + " ".join(f(s[lab][k]) for k in keys) for lab in LABELS)
        lines.append(f"{name[:44]:<44} {s['images']:>6} | {cells}")
    lines.append("paper's human agreement (BoxF1@0.5): artifact 0.278, misalignment 0.409")
    lines.append(f"description cosine (DescCos@0.1): embedder {report.get('embedder') or 'none'}")
    return "\n".join(lines)
