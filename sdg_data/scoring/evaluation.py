"""SDG-Eval as the paper defines it (section 3.2 and appendix C), per defect type.

Image level, over every test image:
  DetTypeF1  F1 of "has a type-t defect" (prediction vs ground truth);
  ClnAcc     true-negative rate on the images with no type-t ground truth (the "GT=0" column).
Defect level (the "GT>0" columns; ``box_scope="all"`` also counts boxes predicted on GT-clean images):
  class-aware one-to-one matching per image and type (Hungarian on cost 1 - IoU; ``greedy`` reproduces the
  released evaluate.py), then at tau in {0.1, 0.5}: BoxPr = |M|/sum|P|, BoxRe = |M|/sum|G|,
  BoxF1 = 2|M|/sum(|G| + |P|), micro-averaged over images;
  DescCos@0.1  mean cosine of the description embeddings over the pairs with IoU >= 0.1;
  ImpAcc@0.1   mean of 1 - |s_g - s_p|/100 over the same pairs (a pair whose ground truth has no importance is
               left out; a prediction without importance scores 0).
Output that cannot be parsed counts as predicting no defect. A metric whose denominator is zero is ``None``.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sdg_data.answer import ParseResult, normalized_box_issue, parse_defect_list, parse_response
from sdg_data.boxes import BoxOrder
from sdg_data.config import BoxLimit, Count, Draws, Positive
from sdg_data.io.arrow import SplitName
from sdg_data.matching import MatchMethod, clear_assignments, match, match_lone
from sdg_data.records import LABELS, Defect, ImageRecord
from sdg_data.scoring.embedding import CachedEmbedder
from sdg_data.scoring.table import MAX_BOXES, MAX_PAIRS, ScoringTable, described_pairs


THRESHOLDS: tuple[float, ...] = (0.1, 0.5)
DESC_THRESHOLD = 0.1
_TOL = 1e-9  # IoU exactly at a threshold counts as reaching it, float noise or not

BoxScope = Literal["gt_positive", "all"]
ApBackend = Literal["sdg", "faster-coco-eval", "pycocotools"]


@dataclass
class EvalConfig:
    """How SDG-Eval scores a prediction file against ground truth."""

    split: SplitName | None = field(
        default=None,
        metadata={
            "help": (
                "The split that is the ground truth: ``test`` (the held-out images), ``train`` or ``all``. Unset: "
                "a dataset folder's ``test`` split, a records file whole (given, only its records of that split)."
            )
        },
    )
    match: MatchMethod = field(
        default="hungarian",
        metadata={"help": "``hungarian`` (the paper) or ``greedy`` (the released evaluate.py, for comparison)."},
    )
    embedder: str = field(
        default="Qwen/Qwen3-Embedding-0.6B",
        metadata={
            "help": "Model id or local folder for DescCos; ``lexical`` for an offline approximation; ``none`` to skip."
        },
    )
    box_order: BoxOrder = field(
        default="xyxy",
        metadata={"help": "Coordinate order of ``box_2d`` in the predictions (the ground truth is always xyxy)."},
    )
    box_scope: BoxScope = field(
        default="gt_positive",
        metadata={
            "help": "Images whose boxes enter the defect-level metrics: those with type-t ground truth (paper) or all."
        },
    )
    strict_format: bool = field(
        default=False,
        metadata={"help": "Count any response that fails the format check as no defect (default: keep what parses)."},
    )
    embed_batch_size: Positive = field(default=64, metadata={"help": "Descriptions per embedder call."})
    embed_max_length: Positive = field(default=256, metadata={"help": "Tokens kept of each description."})
    ap: bool = field(
        default=True,
        metadata={
            "help": "Also COCO AP (importance as the score) and joint box + description AP, beside the paper's."
        },
    )
    ap_backend: ApBackend = field(
        default="sdg",
        metadata={
            "help": (
                "Who computes COCO AP: ``sdg`` (pycocotools' algorithm on columns, bit for bit, fast at scale) or "
                "the evaluators themselves, ``faster-coco-eval`` or ``pycocotools``."
            )
        },
    )
    max_boxes: BoxLimit = field(
        default=MAX_BOXES,
        metadata={
            "help": (
                "Boxes per image a score takes (matching is quadratic in them): a prediction with more is a format "
                "failure with nothing scored, ground truth with more an error."
            )
        },
    )
    max_pairs: Positive = field(
        default=MAX_PAIRS,
        metadata={
            "help": (
                "Box pairs a run scores in all (a ground-truth box and a prediction of one image and type; ~200 "
                "bytes each): more is an error before any is made, so a run's memory stays bounded."
            )
        },
    )
    bootstrap: Draws = field(
        default=0,
        metadata={
            "help": (
                "Resample the images this many times for 95% intervals of "
                "every SDG-Eval metric (0: none; 1000 is usual)."
            )
        },
    )
    seed: Count = field(default=0, metadata={"help": "Seeds the bootstrap."})


# Per image and label, the sums every SDG-Eval metric is a ratio of (so a bootstrap resamples images and adds).
FIELDS = ("tp", "fp", "fn", "tn", "n_gt", "n_pred", "m0.1", "m0.5", "pairs", "cos_sum", "imp_n", "imp_sum")
F = {name: k for k, name in enumerate(FIELDS)}
HEADLINE = ("DetTypeF1", "ClnAcc", "BoxF1@0.1", "BoxF1@0.5", "DescCos@0.1", "ImpAcc@0.1")


def metrics_from_sums(sums: np.ndarray, has_cos: bool) -> dict[str, float | None]:
    """Every metric of one label from its summed fields (one row of ``FIELDS``): the report, the bootstrap and
    the comparison all compute them here. A metric whose denominator is zero is None."""

    def ratio(a: float, b: float) -> float | None:
        return float(a / b) if b else None

    x = dict(zip(FIELDS, sums, strict=True))
    out: dict[str, float | None] = {
        "DetTypeF1": ratio(2 * x["tp"], 2 * x["tp"] + x["fp"] + x["fn"]),
        "ClnAcc": ratio(x["tn"], x["tn"] + x["fp"]),
    }
    for t in THRESHOLDS:
        out[f"BoxPr@{t}"] = ratio(x[f"m{t}"], x["n_pred"])
        out[f"BoxRe@{t}"] = ratio(x[f"m{t}"], x["n_gt"])
        out[f"BoxF1@{t}"] = ratio(2 * x[f"m{t}"], x["n_gt"] + x["n_pred"])
    out["DescCos@0.1"] = ratio(x["cos_sum"], x["pairs"]) if has_cos else None
    out["ImpAcc@0.1"] = ratio(x["imp_sum"], x["imp_n"])
    return out


def _counts(sums: np.ndarray) -> dict[str, int]:
    x = dict(zip(FIELDS, sums.tolist(), strict=True))
    return {"images_pos": int(x["tp"] + x["fn"]), "images_neg": int(x["tn"] + x["fp"]), "gt_boxes": int(x["n_gt"]),
            "pred_boxes": int(x["n_pred"]), "matched@0.1": int(x["m0.1"]), "matched@0.5": int(x["m0.5"]),
            "pairs@0.1": int(x["pairs"])}  # fmt: skip


def bootstrap(per_image: Mapping[str, Any], n: int, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Percentile intervals of every headline metric, per label, resampling images with replacement ``n`` times."""
    sums = np.asarray(per_image["sums"], dtype=np.float64)
    rng = np.random.default_rng(seed)
    draws: dict[str, dict[str, list[float]]] = {lab: {m: [] for m in HEADLINE} for lab in per_image["labels"]}
    for _ in range(n):
        w = np.bincount(rng.integers(0, len(sums), len(sums)), minlength=len(sums)).astype(np.float64)
        total = np.einsum("i,ilf->lf", w, sums)
        for k, lab in enumerate(per_image["labels"]):
            got = metrics_from_sums(total[k], per_image["has_cos"])
            for m in HEADLINE:
                if got[m] is not None:
                    draws[lab][m].append(got[m])
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    return {lab: {m: ([float(np.percentile(v, lo)), float(np.percentile(v, hi))] if v else None)
                  for m, v in ms.items()} for lab, ms in draws.items()} | {"n": n, "level": level}  # fmt: skip


def prediction_defects(row: Mapping[str, Any], cfg: EvalConfig) -> ParseResult:
    """Defects of one prediction line: parsed from ``response`` text, or checked from a ``defects`` list."""
    if "response" in row:
        res = parse_response(row["response"], order=cfg.box_order)
    else:
        res = parse_defect_list(row.get("defects"), order=cfg.box_order)
    if cfg.strict_format and not res.format_ok:
        res.defects = []
    return res


def matched_pairs(table: ScoringTable, method: MatchMethod) -> np.ndarray:
    """The one-to-one pairs SDG-Eval scores: :func:`match` per (image, label) on the slot's IoU matrix, as pair
    indices in slot order and, within a slot, in the order ``match`` returns them.

    Most slots need no solver call: a lone pair is decided by :func:`match_lone`, and for the Hungarian
    assignment a slot where each box of the smaller side has one clear best partner (ahead of the next by more
    than 1e-9), all different, has that as its unique optimum; the rest go through ``match``."""
    picked: list[np.ndarray] = []
    seq: list[np.ndarray] = []
    for n_g, n_p, _, pairs in table.buckets():
        if n_g == 1 and n_p == 1:
            k = pairs[:, 0, 0]
            if method != "hungarian":
                k = k[[match_lone(v, method) for v in table.iou[k].tolist()]]
            picked.append(k)
            seq.append(np.zeros(len(k), dtype=np.int64))
            continue
        v = table.iou[pairs]
        rest = np.arange(len(pairs))
        if method == "hungarian":
            sure, rows, cols = clear_assignments(v)
            picked.append(pairs[sure][np.arange(int(sure.sum()))[:, None], rows, cols].ravel())
            seq.append(rows.ravel())  # the solver returns rows in ascending order
            rest = np.flatnonzero(~sure)
        for s in rest.tolist():
            r, c = match(v[s], method)
            picked.append(pairs[s][r, c])
            seq.append(np.arange(len(r), dtype=np.int64))
    if not picked:
        return np.zeros(0, dtype=np.int64)
    out, order_in_slot = np.concatenate(picked), np.concatenate(seq)
    return out[np.lexsort((order_in_slot, table.pair_slot[out]))]


def _image_sums(table: ScoringTable, n_images: int, box_scope: str) -> np.ndarray:
    """The (images, labels, FIELDS) sums' image-level part: tp / fp / fn / tn of "has a defect of this type", and
    the box counts of the images in scope (those with type-t ground truth, or all)."""
    shape = (n_images, len(LABELS))
    n_g, n_p = table.gt.count.reshape(shape), table.pred.count.reshape(shape)
    has_g, has_p = n_g > 0, n_p > 0
    per_image = np.zeros((*shape, len(FIELDS)), dtype=np.float64)
    per_image[..., F["tp"]] = has_g & has_p
    per_image[..., F["fp"]] = has_p & ~has_g
    per_image[..., F["fn"]] = has_g & ~has_p
    per_image[..., F["tn"]] = ~(has_g | has_p)
    in_scope = has_g if box_scope == "gt_positive" else np.ones(shape, dtype=bool)
    per_image[..., F["n_gt"]] = np.where(in_scope, n_g, 0)
    per_image[..., F["n_pred"]] = np.where(in_scope, n_p, 0)
    return per_image


def _pair_sums(
    table: ScoringTable, per_image: np.ndarray, method: MatchMethod, embedder: CachedEmbedder | None
) -> np.ndarray | None:
    """Fill the matched pairs' sums into ``per_image``: matches at each threshold, and over the pairs at IoU >=
    0.1 their count, description cosines (with an embedder) and importance accuracies. Returns the cosines."""
    shape = per_image.shape[:2]
    pairs = matched_pairs(table, method)  # only slots with ground truth: always in scope
    iou, slot = table.iou[pairs], table.pair_slot[pairs]

    def per_slot(which: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(slot[which], weights=weights, minlength=table.n_slots).reshape(shape)

    for t in THRESHOLDS:
        per_image[..., F[f"m{t}"]] = per_slot(iou + _TOL >= t)
    described = iou + _TOL >= DESC_THRESHOLD
    dp = pairs[described]
    sg, sp = table.gt.importance[table.pair_g[dp]], table.pred.importance[table.pair_p[dp]]
    imp = np.where(np.isnan(sg), np.nan, np.where(np.isnan(sp), 0.0, 1.0 - np.abs(sg - sp) / 100.0))
    cos = None
    if embedder is not None:
        gt_desc, pred_desc = described_pairs(table, dp)
        cos = embedder.pair_cosines(gt_desc, pred_desc)
    per_image[..., F["pairs"]] = per_slot(described)
    if cos is not None:
        per_image[..., F["cos_sum"]] = per_slot(described, cos)
    known = described.copy()
    known[described] = ~np.isnan(imp)
    per_image[..., F["imp_n"]] = per_slot(known)
    per_image[..., F["imp_sum"]] = per_slot(known, imp[~np.isnan(imp)])
    return cos


def evaluate(
    gt: Sequence[ImageRecord],
    preds: Mapping[str, Sequence[Defect]],
    cfg: EvalConfig | None = None,
    embedder: CachedEmbedder | None = None,
    table: ScoringTable | None = None,
) -> dict[str, Any]:
    """Score ``preds`` (image_id -> defects) against ``gt``. An image with no prediction predicts no defect.

    Every sum is taken on the run's columns (``table``, built here when not given): per (image, label) slot at
    once, and the matched pairs' sums land on their slots in one bincount, in slot order."""
    cfg = cfg or EvalConfig()
    table = table if table is not None else ScoringTable.build(gt, preds)
    images_by_gen: dict[str, int] = defaultdict(int)
    for rec in gt:
        images_by_gen[rec.generator or "unknown"] += 1
    per_image = _image_sums(table, len(gt), cfg.box_scope)
    cos = _pair_sums(table, per_image, cfg.match, embedder)
    has_cos = cos is not None
    gens = np.asarray([r.generator or "unknown" for r in gt], dtype=object)

    def block(rows: np.ndarray) -> dict[str, Any]:
        total = rows.sum(axis=0) if len(rows) else np.zeros((len(LABELS), len(FIELDS)))
        return {label: metrics_from_sums(total[k], has_cos) for k, label in enumerate(LABELS)}

    report: dict[str, Any] = block(per_image)
    report["by_generator"] = {gen: block(per_image[gens == gen]) for gen in sorted(images_by_gen)}
    total = per_image.sum(axis=0) if len(gt) else np.zeros((len(LABELS), len(FIELDS)))
    report["counts"] = {label: _counts(total[k]) for k, label in enumerate(LABELS)}
    report["counts"]["images"] = len(gt)
    report["counts"]["by_generator"] = dict(sorted(images_by_gen.items()))
    report["per_image"] = {"image_ids": [r.image_id for r in gt], "fields": list(FIELDS), "labels": list(LABELS),
                           "has_cos": has_cos, "sums": per_image}  # fmt: skip
    report["config"] = {
        "match": cfg.match,
        "box_scope": cfg.box_scope,
        "box_order": cfg.box_order,
        "strict_format": cfg.strict_format,
        "embedder": embedder.name if embedder is not None else None,
    }
    return report


def format_table(report: Mapping[str, Any], title: str = "pred") -> str:
    """The paper's Table 2 layout: one row per model (and per generator), six columns per defect type."""
    cols = ("DetTypeF1", "ClnAcc", "BoxF1@0.1", "BoxF1@0.5", "DescCos@0.1", "ImpAcc@0.1")  # the JSON's names
    widths = [max(8, len(c)) for c in cols]
    name_w = max(24, len(title) + 2, *(len(g) + 10 for g in report.get("by_generator", {})))

    def cells(block: Mapping[str, Any]) -> str:
        parts = []
        for label in LABELS:
            vals = block[label]
            parts.append(" ".join(f"{'-' if vals[c] is None else format(vals[c], '.3f'):>{w}}"
                                  for c, w in zip(cols, widths, strict=True)))  # fmt: skip
        return " | ".join(parts)

    width = len(cells({label: dict.fromkeys(cols) for label in LABELS})) // 2
    lines = [
        f"{'':<{name_w}} | {'Artifact':^{width - 1}}| {'Misalignment':^{width - 1}}",
        f"{'':<{name_w}} | "
        + " | ".join(" ".join(f"{c:>{w}}" for c, w in zip(cols, widths, strict=True)) for _ in LABELS),  # fmt: skip
        "-" * (name_w + 3 + 2 * width + 2),
    ]
    counts = report.get("counts", {})
    if "ground_truth" in report:
        from sdg_data.io.truth import describe

        lines.insert(0, describe(report["ground_truth"]))
    lines.append(f"{(title + ' (' + str(counts.get('images', '?')) + ')'):<{name_w}} | {cells(report)}")
    for gen, block in report.get("by_generator", {}).items():
        n = counts.get("by_generator", {}).get(gen, "?")
        lines.append(f"{('  ' + gen + ' (' + str(n) + ')'):<{name_w}} | {cells(block)}")
    cfg = report.get("config", {})
    lines.append(
        f"matching: {cfg.get('match')}, box scope: {cfg.get('box_scope')}, "
        f"embedder: {cfg.get('embedder') or 'none (DescCos not computed)'}"
    )
    return "\n".join(lines)


def index_predictions(
    rows: Iterable[tuple[int, Mapping[str, Any]]], cfg: EvalConfig, source: str = "pred"
) -> tuple[dict[str, list[Defect]], dict[str, Any]]:
    """Parse prediction lines into image_id -> defects, with parse statistics; bad lines raise with their number."""
    out: dict[str, list[Defect]] = {}
    stats = {"lines": 0, "format_failures": 0, "unparseable": 0, "issues": 0, "examples": [], "coercions": 0,
             "coercion_examples": []}  # fmt: skip
    for lineno, row in rows:
        if not isinstance(row, Mapping) or not isinstance(row.get("image_id"), str):
            raise ValueError(f"{source}:{lineno}: record '?' field 'image_id': missing or not a string")
        iid = row["image_id"]
        if iid in out:
            raise ValueError(f"{source}:{lineno}: record {iid!r} field 'image_id': duplicate prediction")
        if "response" not in row and "defects" not in row:
            raise ValueError(f"{source}:{lineno}: record {iid!r} field 'defects': need 'defects' or 'response'")
        res = prediction_defects(row, cfg)
        if len(res.defects) > cfg.max_boxes:  # a flood: refused before its pairs are made
            why = f"{len(res.defects)} boxes, more than max_boxes {cfg.max_boxes}"
            res.defects, res.format_ok, res.reason = [], False, why
            res.issues.append(why)
        norm = normalized_box_issue(res)
        if norm:
            field, why = norm.split(": ", 1)
            raise ValueError(f"{source}:{lineno}: record {iid!r} field {field!r}: {why}")
        stats["lines"] += 1
        stats["issues"] += len(res.issues)
        if res.coercions:  # values the contract refuses in ground truth, read here as something else: counted
            stats["coercions"] += res.coercions
            if len(stats["coercion_examples"]) < 5:
                said = [x for x in res.issues if "coerced" in x or "rounded" in x or "clamped" in x or "dropped" in x]
                stats["coercion_examples"].append({"image_id": iid, "line": lineno, "issues": said[:10]})
        if not res.format_ok:
            stats["format_failures"] += 1
            if not res.defects:
                stats["unparseable"] += 1
            if len(stats["examples"]) < 5:
                stats["examples"].append({"image_id": iid, "reason": res.reason})
        out[iid] = res.defects
    return out, stats


def require_shared_ids(gt: list[ImageRecord], preds: dict[str, Any], stats: dict[str, Any], pred_path: Any) -> None:
    """Count predictions missing and unknown into ``stats``; refuse a scoring with no image in common (it would print
    an all-zero table and look like a result)."""
    gt_ids = {r.image_id for r in gt}
    stats["missing_predictions"] = sum(1 for r in gt if r.image_id not in preds)
    stats["unknown_image_ids"] = sum(1 for iid in preds if iid not in gt_ids)
    if stats["missing_predictions"] == len(gt):
        raise ValueError(
            f"{pred_path}: no prediction for any of the {len(gt)} ground-truth images "
            f"({stats['lines']} prediction lines, {stats['unknown_image_ids']} with unknown image ids); "
            "are --gt and --pred from the same set?"
        )


def require_pairs_within(gt: Sequence[ImageRecord], preds: Mapping[str, Any], most: int, pred_path: Any) -> None:
    """Refuse, before any pair is made, a run whose same-image-and-type box pairs exceed ``most`` (each holds an
    IoU, indices and, for matching, a cost: memory grows with their number, not with the images')."""
    total = 0
    for rec in gt:
        got = preds.get(rec.image_id)
        if not got or not rec.defects:
            continue
        for label in LABELS:
            total += sum(d.label == label for d in rec.defects) * sum(d.label == label for d in got)
    if total > most:
        raise ValueError(f"{pred_path}: {total} box pairs to score (images with many boxes on both sides), more than "
                         f"max_pairs {most}; score fewer images at once or raise --max-pairs")  # fmt: skip


def evaluate_files(
    gt_path: str | Path, pred_path: str | Path, out_path: str | Path | None, cfg: EvalConfig
) -> dict[str, Any]:
    """``sdg eval``: read ground truth and predictions, score, write the JSON report; returns the report."""
    from sdg_data.io.files import write_json, write_jsonl
    from sdg_data.io.jsonl import input_kind, iter_jsonl, load_records
    from sdg_data.io.truth import load_ground_truth
    from sdg_data.scoring.embedding import load_embedder

    truth = load_ground_truth(gt_path, cfg.split, "eval")
    gt = truth.records
    crowded = next((r for r in gt if len(r.defects) > cfg.max_boxes), None)
    if crowded is not None:
        raise ValueError(f"{gt_path}: record {crowded.image_id!r} field 'defects': {len(crowded.defects)} boxes, more "
                         f"than max_boxes {cfg.max_boxes} (raise --max-boxes up to 1000 to score it)")  # fmt: skip
    pp = Path(pred_path)
    rows = (
        enumerate((r.to_json() for r in load_records(pp, split=cfg.split or "test")), 1)
        if pp.exists() and input_kind(pp) in ("parquet", "dataset")
        else iter_jsonl(pp)
    )
    preds, stats = index_predictions(rows, cfg, source=str(pred_path))
    unannotated = {r.image_id for r in truth.rejects}
    stats["not_annotated_predictions"] = sum(1 for iid in preds if iid in unannotated)  # not scored: no truth known
    for iid in unannotated:
        preds.pop(iid, None)
    require_shared_ids(gt, preds, stats, pred_path)
    require_pairs_within(gt, preds, cfg.max_pairs, pred_path)
    embedder = load_embedder(cfg.embedder, batch_size=cfg.embed_batch_size, max_length=cfg.embed_max_length)
    table = ScoringTable.build(gt, preds)  # the records' boxes as columns, shared by every scorer below
    report = evaluate(gt, preds, cfg, embedder, table)
    if cfg.ap:
        from sdg_data.scoring.ap import ap_report

        report["ap"] = ap_report(gt, preds, embedder, table, backend=cfg.ap_backend)
    report["predictions"] = stats
    report["ground_truth"] = truth.source  # what was scored: path, split, fingerprint, images
    per_image = report.pop("per_image")
    if cfg.bootstrap:
        report["bootstrap"] = bootstrap(per_image, cfg.bootstrap, cfg.seed)
    if out_path:
        out_path = Path(out_path)
        side = out_path.with_name(out_path.stem + ".per_image.npz")
        report["per_image_sha256"] = write_per_image(side, per_image)  # binds the file to this report
        report["per_image_file"] = side.name  # what sdg compare pairs two runs by
        if truth.rejects:  # the ground-truth records left out, with why (the one rejects schema)
            rejects = out_path.with_name(out_path.stem + ".gt-left-out.jsonl")
            write_jsonl(rejects, [r.to_json() for r in truth.rejects])
            truth.source["rejects_file"] = rejects.name
        write_json(out_path, report)
    return report


def write_per_image(path: Path, per_image: Mapping[str, Any]) -> str:
    """The per-image sums beside the report (compact; a paired comparison of two runs reads them), with the names
    of their axes so a reader matches labels and fields by name."""
    import io

    from sdg_data.io.files import write_bytes

    buf = io.BytesIO()
    np.savez_compressed(buf, image_ids=np.asarray(per_image["image_ids"], dtype=str), sums=per_image["sums"],
                        has_cos=np.asarray(per_image["has_cos"]), labels=np.asarray(per_image["labels"]),
                        fields=np.asarray(list(FIELDS)))  # fmt: skip
    write_bytes(path, buf.getvalue())
    return "sha256:" + hashlib.sha256(buf.getvalue()).hexdigest()


class ReportError(ValueError):
    """A report (or its per-image file) that cannot be compared; the message names the file and the field."""

    def __init__(self, path: Any, field: str, reason: str):
        super().__init__(f"{path}: field {field!r}: {reason}")


def read_report(report_path: str | Path) -> dict[str, Any]:
    """An ``sdg eval --out`` report as a dict; one-line errors for a missing file, bad JSON or another shape."""
    import json

    report_path = Path(report_path)
    if not report_path.is_file():
        raise ValueError(f"{report_path}: no such file" if not report_path.exists() else f"{report_path}: not a file")
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{report_path}: not a JSON report ({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(report, dict):
        raise ReportError(
            report_path, "<report>", f"must be an object (an sdg eval report), got {type(report).__name__}"
        )
    return report


def _per_image_arrays(report_path: Path, report: Mapping[str, Any]) -> tuple[Path, dict[str, np.ndarray]]:
    """The arrays of the per-image file a report names: read as a regular file, never through a link, and only
    when it is the very file the report was written with (its SHA-256, in reports since 1.2)."""
    import io

    from sdg_data.io.sidecar import read_regular

    name = report.get("per_image_file")
    if not isinstance(name, str) or "/" in name or not (report_path.parent / name).is_file():
        raise ValueError(f"{report_path}: no per-image file beside it (rerun sdg eval with --out to write one)")
    side = report_path.parent / name
    data = read_regular(side, cap=4 << 30)
    if data is None:
        raise ReportError(report_path, "per_image_file", f"{name} is not a regular file (a link, or too large)")
    want = report.get("per_image_sha256")
    if want is not None and want != "sha256:" + hashlib.sha256(data).hexdigest():
        raise ReportError(report_path, "per_image_file", f"{name} is not the file this report was written with")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return side, {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - a zip of anything: BadZipFile, KeyError, ValueError, EOFError ...
        raise ValueError(f"{side}: not a per-image file ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"
                         ) from None  # fmt: skip


def _checked_names(side: Path, got: Mapping[str, np.ndarray]) -> tuple[list[str], list[str]]:
    """The image ids (unique) and label names (distinct) of a per-image file, and its fields named as ours."""
    for key in ("image_ids", "sums", "has_cos", "labels"):
        if key not in got:
            raise ReportError(side, key, "missing")
    ids, labels = got["image_ids"], got["labels"]
    if ids.ndim != 1 or ids.dtype.kind != "U":
        raise ReportError(side, "image_ids", f"must be a list of ids, got an array of shape {ids.shape}")
    ids = ids.tolist()
    if len(set(ids)) != len(ids):
        dup = next(i for k, i in enumerate(ids) if i in ids[:k])
        raise ReportError(side, "image_ids", f"{dup!r} appears more than once")
    if labels.ndim != 1 or labels.dtype.kind != "U" or len(set(labels.tolist())) != len(labels):
        raise ReportError(side, "labels", f"must be distinct label names, got {labels.tolist()!r}"[:300])
    fields = got["fields"].tolist() if "fields" in got else list(FIELDS)  # files before 1.2 did not name them
    if fields != list(FIELDS):
        raise ReportError(side, "fields", f"must be {list(FIELDS)}, got {fields!r}"[:300])
    return ids, labels.tolist()


def _checked_sums(side: Path, sums: np.ndarray, ids: list[str], labels: list[str]) -> np.ndarray:
    """The sums as float64 of shape (images, labels, fields): finite, not negative, whole numbers where they
    count boxes or images."""
    if sums.dtype.kind not in "fiu" or sums.shape != (len(ids), len(labels), len(FIELDS)):
        want = f"({len(ids)} images, {len(labels)} labels, {len(FIELDS)} fields)"
        raise ReportError(side, "sums", f"must be numbers of shape {want}, got {sums.dtype} {sums.shape}")
    sums = sums.astype(np.float64)
    if not np.isfinite(sums).all():
        bad = int(np.argwhere(~np.isfinite(sums))[0][0])
        raise ReportError(side, "sums", f"holds NaN or infinity (image {ids[bad]!r})")
    if (sums < 0).any():
        raise ReportError(side, "sums", "holds negative counts")
    counts = sums[..., [F[f] for f in FIELDS if f not in ("cos_sum", "imp_sum")]]
    if (counts != np.round(counts)).any() or (counts > 1e9).any():
        raise ReportError(side, "sums", "holds counts that are not whole numbers of boxes or images")
    return sums


def read_per_image(report_path: str | Path, report: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A report's per-image sums (``sdg eval --out`` writes them beside the report), checked: the report's own
    file, unique image ids, sums of shape (images, labels, fields), finite whole counts, and labels and fields
    named as this version names them (matched by name, never by position)."""
    report_path = Path(report_path)
    report = read_report(report_path) if report is None else report
    side, got = _per_image_arrays(report_path, report)
    ids, labels = _checked_names(side, got)
    sums = _checked_sums(side, got["sums"], ids, labels)
    has_cos = got["has_cos"]
    if has_cos.shape != () or has_cos.dtype != np.bool_:
        raise ReportError(side, "has_cos", f"must be one true or false, got {has_cos.dtype} {has_cos.shape}")
    n_report = (report.get("counts") or {}).get("images")
    if isinstance(n_report, int) and n_report != len(ids):
        raise ReportError(side, "image_ids", f"holds {len(ids)} images, the report scored {n_report}")
    return {"image_ids": ids, "sums": sums, "has_cos": bool(has_cos), "labels": labels, "fields": list(FIELDS)}


def same_ground_truth(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    """Why two reports' ground truths differ (split, or source fingerprint), or None when they are the same."""
    ga, gb = a.get("ground_truth"), b.get("ground_truth")
    for which, g in (("A", ga), ("B", gb)):
        if not isinstance(g, dict) or not isinstance(g.get("fingerprint"), str) or not g["fingerprint"]:
            return f"{which} does not record its ground truth (scored before sdg recorded it; rerun sdg eval)"
    if ga.get("split") != gb.get("split"):
        return (
            f"A scored split {ga.get('split')!r} of {ga.get('path')}, B split {gb.get('split')!r} of {gb.get('path')}"
        )
    if ga.get("fingerprint") != gb.get("fingerprint"):
        return (
            f"A's ground truth {ga.get('path')} ({str(ga.get('fingerprint'))[:19]}) is not B's {gb.get('path')} "
            f"({str(gb.get('fingerprint'))[:19]})"
        )
    return None


SETTINGS = ("match", "box_scope", "box_order", "strict_format", "embedder")  # what changes the scores themselves


def different_settings(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    """The scoring settings two reports differ in (matching, box scope, ...), or None."""
    ca, cb = a.get("config"), b.get("config")
    ca, cb = (ca if isinstance(ca, dict) else {}), (cb if isinstance(cb, dict) else {})
    diff = [f"{k} {ca.get(k)!r} vs {cb.get(k)!r}" for k in SETTINGS if ca.get(k) != cb.get(k)]
    return ", ".join(diff) or None


def compare(
    a: str | Path,
    b: str | Path,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    allow_different_gt: bool = False,
    allow_different_settings: bool = False,
) -> dict[str, Any]:
    """B minus A for every headline metric, with a paired bootstrap over the images both runs scored: each draw
    resamples the shared images once and recomputes both runs on it, so image difficulty cancels out.

    Two reports scored on different ground truth (another split, another file or build) are refused unless
    ``allow_different_gt``, and then the result says so. Labels are matched by name."""
    ra, rb = read_report(a), read_report(b)
    differs = same_ground_truth(ra, rb)
    if differs and not allow_different_gt:
        raise ValueError(f"{a} and {b} were not scored on the same ground truth: {differs}; pass --allow-different-gt "
                         "to compare them anyway")  # fmt: skip
    settings = different_settings(ra, rb)
    if settings and not allow_different_settings:
        raise ValueError(
            f"{a} and {b} were scored with different settings ({settings}): the difference would be the settings', "
            "not the models'; pass --allow-different-settings to compare anyway"
        )
    pa, pb = read_per_image(a, ra), read_per_image(b, rb)
    sa, sb = _paired_sums(a, b, pa, pb)
    metrics = paired_metrics(sa, sb, pa["labels"], pa["has_cos"] and pb["has_cos"], n, seed, level)
    return {"a": str(a), "b": str(b), "images": len(sa), "only_a": len(pa["image_ids"]) - len(sa),
            "only_b": len(pb["image_ids"]) - len(sa), "n": n, "level": level,
            "ground_truth": {"a": ra.get("ground_truth"), "b": rb.get("ground_truth"), "differs": differs},
            "settings_differ": settings, "metrics": metrics}  # fmt: skip


def _paired_sums(a: Any, b: Any, pa: Mapping[str, Any], pb: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """A's and B's sums over the images both scored, rows aligned by image id, B's labels in A's order by name."""
    if set(pa["labels"]) != set(pb["labels"]):
        raise ReportError(b, "labels", f"{pb['labels']} do not match A's {pa['labels']}")
    lab_b = [pb["labels"].index(lab) for lab in pa["labels"]]
    idx_b = {iid: k for k, iid in enumerate(pb["image_ids"])}
    shared = [(k, idx_b[iid]) for k, iid in enumerate(pa["image_ids"]) if iid in idx_b]
    if not shared:
        raise ValueError(f"{a} and {b} share no image: compare runs scored on the same ground truth")
    return pa["sums"][[i for i, _ in shared]], pb["sums"][[j for _, j in shared]][:, lab_b]


def paired_metrics(
    sa: np.ndarray, sb: np.ndarray, labels: Sequence[str], has_cos: bool, n: int, seed: int, level: float
) -> dict[str, dict[str, Any]]:
    """Each headline metric of A and B, B - A, and its paired percentile interval over ``n`` draws that resample
    the images once for both runs; ``clear`` when the interval excludes 0."""
    rng = np.random.default_rng(seed)
    point = {}
    for k, lab in enumerate(labels):
        ma, mb = metrics_from_sums(sa[:, k].sum(0), has_cos), metrics_from_sums(sb[:, k].sum(0), has_cos)
        point[lab] = {m: (ma[m], mb[m]) for m in HEADLINE}
    diffs: dict[str, dict[str, list[float]]] = {lab: {m: [] for m in HEADLINE} for lab in labels}
    for _ in range(n):
        w = np.bincount(rng.integers(0, len(sa), len(sa)), minlength=len(sa)).astype(np.float64)
        ta, tb = np.einsum("i,ilf->lf", w, sa), np.einsum("i,ilf->lf", w, sb)
        for k, lab in enumerate(labels):
            ma, mb = metrics_from_sums(ta[k], has_cos), metrics_from_sums(tb[k], has_cos)
            for m in HEADLINE:
                if ma[m] is not None and mb[m] is not None:
                    diffs[lab][m].append(mb[m] - ma[m])
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out: dict[str, dict[str, Any]] = {}
    for lab in labels:
        for m in HEADLINE:
            va, vb = point[lab][m]
            d = diffs[lab][m]
            ci = [float(np.percentile(d, lo)), float(np.percentile(d, hi))] if d else None
            out[f"{lab}/{m}"] = {"a": va, "b": vb, "diff": None if va is None or vb is None else vb - va,
                                 "ci": ci, "clear": bool(ci and (ci[0] > 0 or ci[1] < 0))}  # fmt: skip
    return out


def format_compare(c: Mapping[str, Any]) -> str:
    def f(v) -> str:
        return f"{v:8.3f}" if v is not None else f"{'-':>8}"

    lines = [f"B - A over {c['images']} shared images ({c['n']} paired bootstrap draws, {c['level']:.0%} intervals)",
             f"  A: {c['a']}", f"  B: {c['b']}"]  # fmt: skip
    gt = c.get("ground_truth") or {}
    if gt.get("differs"):
        lines.append(f"  NOT the same ground truth (compared on request): {gt['differs']}")
    elif gt.get("a"):
        from sdg_data.io.truth import describe

        lines.append(f"  both scored on the {describe(gt['a'])}")
    if c.get("settings_differ"):
        lines.append(f"  NOT the same scoring settings (compared on request): {c['settings_differ']}")
    if c.get("only_a") or c.get("only_b"):
        lines.append(f"  left out: {c['only_a']} images only A scored, {c['only_b']} only B scored")
    lines.append(f"{'metric':<28}{'A':>9}{'B':>9}{'B - A':>9}   interval")
    for name, v in c["metrics"].items():
        ci = "-" if v["ci"] is None else f"[{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]"
        mark = "  *" if v["clear"] else ""
        lines.append(f"{name:<28}{f(v['a'])} {f(v['b'])} {f(v['diff'])}   {ci}{mark}")
    if any(v["clear"] for v in c["metrics"].values()):
        lines.append("* the interval excludes 0: B and A differ on this metric beyond resampling noise")
    return "\n".join(lines)
