"""Several annotators' boxes of one image merged into one ground truth: pull's ``consensus`` policy.

One annotation per annotator and image (their latest). Per label, the annotators' boxes are taken in turn (annotators
in sorted order) and matched one to one (Hungarian on IoU, kept at IoU >= ``iou``) to the clusters built so far, each
cluster represented by the median of its boxes; a box that matches none starts a cluster. A cluster drawn by a quorum
of the image's annotators (default: a strict majority; with weights, the same share of their summed weight) becomes one
box: the coordinate-wise median, the median importance, and the description most similar to the others' (cosine with
the embedder; on a tie, the first annotator's in order). Every other cluster is a disagreement, kept with who drew it.
An image on which no cluster reaches the quorum is clean when a quorum of its annotators drew nothing; otherwise it is
unresolved (annotators who each saw a different defect, or fewer annotators than the quorum): pull leaves it out of the
records and lists its boxes with the disagreements, so it is never taken for clean.

A box of another label in the same place is another cluster: labels never merge.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from sdg_data.boxes import boxes_array, iou_matrix, median_box
from sdg_data.matching import match
from sdg_data.records import LABELS, Defect, ImageRecord


@dataclass
class _Cluster:
    label: str
    members: list[tuple[str, Defect, Any]] = field(default_factory=list)  # (annotator, box, annotation id)

    @property
    def rep(self):
        return median_box([d.box for _, d, _ in self.members])


def latest_per_annotator(records: Iterable[ImageRecord], apart: bool = False) -> dict[str, dict[str, ImageRecord]]:
    """image_id -> annotator -> that annotator's latest annotation of it. An annotation with no annotator is
    "unknown"; with ``apart`` each such annotation is a voter of its own (two anonymous people are not one)."""
    out: dict[str, dict[str, ImageRecord]] = defaultdict(dict)
    for r in records:
        who = r.provenance.get("annotator")
        if not isinstance(who, str) or not who:
            who = f"unknown (annotation {r.provenance.get('annotation_id')})" if apart else "unknown"
        prev = out[r.image_id].get(who)
        if prev is None or str(r.provenance.get("updated_at") or "") > str(prev.provenance.get("updated_at") or ""):
            out[r.image_id][who] = r
    return out


MAX_VOTERS = 20  # annotators of one image a consensus takes: the earliest 20 (matching grows with them times boxes)


def bounded(by_who: Mapping[str, ImageRecord]) -> tuple[dict[str, ImageRecord], list[dict[str, Any]]]:
    """The annotations a consensus takes, and the ones it leaves out with why: one with more than the scorers' box
    limit (a flood, matched quadratically), and past the earliest ``MAX_VOTERS`` annotators. They stay in OUT.all."""
    from sdg_data.scoring.table import MAX_BOXES

    left: list[dict[str, Any]] = []
    kept: dict[str, ImageRecord] = {}
    for who, r in by_who.items():
        if len(r.defects) > MAX_BOXES:
            left.append({"annotator": who, "annotation_id": r.provenance.get("annotation_id"),
                         "why": f"{len(r.defects)} boxes, more than {MAX_BOXES}"})  # fmt: skip
        else:
            kept[who] = r
    order = sorted(kept, key=lambda w: (str(kept[w].provenance.get("created_at") or ""), w))
    for who in order[MAX_VOTERS:]:
        left.append({"annotator": who, "annotation_id": kept[who].provenance.get("annotation_id"),
                     "why": f"past the earliest {MAX_VOTERS} annotators of the image"})  # fmt: skip
        del kept[who]
    return kept, left


def majority(n: int) -> int:
    """A strict majority of ``n`` annotators: 1 of 1, 2 of 2, 2 of 3, 3 of 4."""
    return n // 2 + 1


def _clusters(by_who: Mapping[str, ImageRecord], label: str, iou: float) -> list[_Cluster]:
    clusters: list[_Cluster] = []
    for who in sorted(by_who):
        rec = by_who[who]
        mine = [d for d in rec.defects if d.label == label]
        if not mine:
            continue
        taken: set[int] = set()
        if clusters:
            m = iou_matrix(boxes_array([d.box for d in mine]), boxes_array([c.rep for c in clusters]))
            for r, c in zip(*match(m, "hungarian")):
                if m[r, c] >= iou - 1e-9:
                    clusters[c].members.append((who, mine[r], rec.provenance.get("annotation_id")))
                    taken.add(r)
        clusters += [
            _Cluster(label, [(who, d, rec.provenance.get("annotation_id"))])
            for k, d in enumerate(mine)
            if k not in taken
        ]
    return clusters


def _medoid(texts: list[str], vectors: Mapping[str, np.ndarray] | None) -> int:
    """The index of the text most similar to the others (mean cosine); the first on a tie or without vectors."""
    if len(texts) < 3 or vectors is None:  # one or two texts: every choice ties
        return 0
    v = np.stack([vectors[t] for t in texts]).astype(np.float64)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    sims = v @ v.T
    score = (sims.sum(axis=1) - np.diag(sims)) / (len(texts) - 1)
    best = float(score.max())
    return int(next(i for i, s in enumerate(score) if s >= best - 1e-9))


def _median_importance(values: list[int]) -> int | None:
    return int(math.floor(statistics.median(values) + 0.5)) if values else None


def merge_image(
    by_who: Mapping[str, ImageRecord],
    iou: float = 0.5,
    quorum: int | None = None,
    weights: Mapping[str, float] | None = None,
    vectors: Mapping[str, np.ndarray] | None = None,
) -> tuple[list[Defect], list[dict[str, Any]], dict[str, Any]]:
    """One image's annotators (email -> their annotation) -> (merged defects, disagreements, the vote's terms)."""
    n = len(by_who)
    need = quorum if quorum is not None else majority(n)
    w = {who: float((weights or {}).get(who, 1.0)) for who in by_who}
    total = sum(w.values())
    merged: list[Defect] = []
    disputed: list[dict[str, Any]] = []
    for label in LABELS:
        for c in _clusters(by_who, label, iou):
            who = [m[0] for m in c.members]
            votes = sum(w[x] for x in who)
            passed = votes >= need / n * total - 1e-9 if weights else len(who) >= need
            if passed:
                # the description's tie goes to the heaviest voter first, then the annotators' order
                order = sorted(range(len(who)), key=lambda k: (-w[who[k]], who[k]))
                texts = [c.members[k][1].description for k in order]
                pick = c.members[order[_medoid(texts, vectors)]][1]
                imps = [d.importance for _, d, _ in c.members if d.importance is not None]
                merged.append(
                    Defect(
                        c.rep, label, pick.description, _median_importance(imps),
                        {"origin": "consensus", "votes": len(who), "of": n, "annotators": who,
                         "annotation_ids": [m[2] for m in c.members]},
                    )
                )  # fmt: skip
            else:
                disputed.append(
                    {"label": label, "votes": len(who), "needed": need, "of": n,
                     "boxes": [{"annotator": x, "annotation_id": aid, **d.to_json()} for x, d, aid in c.members]}
                )  # fmt: skip
    clean = [x for x, r in by_who.items() if not r.defects]
    votes = sum(w[x] for x in clean)
    clean_passed = votes >= need / n * total - 1e-9 if weights else len(clean) >= need
    terms = {"annotators": sorted(by_who), "quorum": need, "iou": iou, "weighted": bool(weights),
             "clean_votes": len(clean), "resolved": bool(merged) or clean_passed}  # fmt: skip
    if weights:
        terms["weights"] = {k: round(v, 3) for k, v in sorted(w.items())}
    return merged, disputed, terms


def consensus_record(
    by_who: Mapping[str, ImageRecord],
    iou: float = 0.5,
    quorum: int | None = None,
    weights: Mapping[str, float] | None = None,
    vectors: Mapping[str, np.ndarray] | None = None,
) -> ImageRecord:
    """The image's one record under the consensus policy; image fields come from the earliest annotation, the vote,
    its disagreements and the annotations it could not take (:func:`bounded`) go to the provenance. The vote is
    ``resolved`` when a box reached the quorum or a quorum drew nothing (a clean verdict); otherwise (boxes nobody
    agreed on, fewer annotators than the quorum) the image has no verdict yet, and pull leaves it out of OUT."""
    recs = list(by_who.values())
    base = min(recs, key=lambda r: (str(r.provenance.get("created_at") or ""), str(r.provenance.get("annotation_id"))))
    voters, left_out = bounded(by_who)
    merged, disputed, terms = merge_image(voters, iou, quorum, weights, vectors) if voters else ([], [], {
        "annotators": [], "quorum": quorum or 1, "iou": iou, "weighted": bool(weights), "clean_votes": 0,
        "resolved": False})  # fmt: skip
    decision = {
        "policy": "consensus",
        "rule": f"boxes drawn by {terms['quorum']} of {len(terms['annotators'])} annotators at IoU >= {iou}"
        + (" (weighted by gold scores)" if weights else ""),
        **terms,
        "annotations": [r.provenance.get("annotation_id") for r in recs],
        "disagreements": disputed,
    }
    if left_out:
        decision["left_out"] = left_out
    prov = {k: v for k, v in base.provenance.items() if k not in ("annotation_id", "annotator", "origins")}
    if not terms["resolved"]:
        why = "no annotator it can count" if not voters else (
            f"no box reached {terms['quorum']} of {len(voters)} annotators and {terms['clean_votes']} drew none"
        )  # fmt: skip
        decision["unresolved"] = why
    return replace(base, defects=merged, provenance={**prov, "annotator": "consensus", "consolidation": decision})


def description_vectors(records: Sequence[ImageRecord], embedder: Any) -> dict[str, np.ndarray] | None:
    """Every distinct description, encoded once (one batched call): the medoid's cosines read from here."""
    if embedder is None:
        return None
    texts = sorted({d.description for r in records for d in r.defects})
    if not texts:
        return {}
    return dict(zip(texts, embedder.encode(texts)))
