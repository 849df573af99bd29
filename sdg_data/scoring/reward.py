"""The detector's GRPO reward (paper section 3), batched: one embedding call and one DIoU pass per batch.

For each completion: if the format check fails the reward is ``format_fail`` (-1). Otherwise
``reward = w_box * R_box + w_desc * R_desc + w_imp * R_imp`` with

* R_box: both sets empty -> ``both_empty``; ground truth but no prediction -> ``missed``; prediction on a clean
  image -> ``false_alarm``; else label-constrained Hungarian matching on DIoU with no threshold, and
  (sum of matched DIoU - ``unmatched`` * (#unmatched predictions + #unmatched ground truth)) / max(|G|, |P|, 1),
  clipped to [-1, 1];
* R_desc = sum over matches of clip((cos - desc_floor) / desc_span, 0, 1) / max(|G|, |P|, 1);
* R_imp = sum over matches of clip(1 - |s_pred - s_gt| / imp_span, 0, 1) / max(|G|, |P|, 1), where a missing
  ground-truth importance counts as ``missing_gt_importance`` and a missing predicted one earns 0.

R_desc and R_imp are 0 in the three empty cases.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np

from sdg_data.answer import ParseResult, parse_response
from sdg_data.boxes import BoxOrder, diou_rows
from sdg_data.config import BoxLimit
from sdg_data.io.gc_pause import gc_paused
from sdg_data.matching import hungarian
from sdg_data.records import Defect, RecordError
from sdg_data.scoring.embedding import CachedEmbedder, load_embedder
from sdg_data.scoring.table import MAX_BOXES, MAX_PAIRS


@dataclass
class RewardConfig:
    """Weights and constants of the reward; defaults are the paper's. The help text is field metadata, so trl's
    parser (``sdg train grpo``) and the ``sdg reward`` flags show the same words."""

    w_box: float = field(default=0.6, metadata={"help": "Weight of R_box in the reward."})
    w_desc: float = field(default=0.25, metadata={"help": "Weight of R_desc in the reward."})
    w_imp: float = field(default=0.15, metadata={"help": "Weight of R_imp in the reward."})
    format_fail: float = field(default=-1.0, metadata={"help": "Reward of a completion that fails the format check."})
    both_empty: float = field(default=0.3, metadata={"help": "R_box when both prediction and ground truth are empty."})
    missed: float = field(default=-0.8, metadata={"help": "R_box for an empty prediction of a defective image."})
    false_alarm: float = field(default=-0.3, metadata={"help": "R_box for boxes on a clean image."})
    unmatched: float = field(
        default=0.5, metadata={"help": "Penalty per unmatched box (prediction or ground truth) inside R_box."}
    )
    desc_floor: float = field(default=0.5, metadata={"help": "Cosine at or below which R_desc of a pair is 0."})
    desc_span: float = field(default=0.4, metadata={"help": "Cosine range over which R_desc rises from 0 to 1."})
    imp_span: float = field(default=50.0, metadata={"help": "Importance gap at which R_imp of a pair reaches 0."})
    missing_gt_importance: int = field(
        default=50, metadata={"help": "Importance assumed for a ground-truth box that has none."}
    )
    box_order: BoxOrder = field(default="xyxy", metadata={"help": "Coordinate order the policy writes box_2d in."})
    max_boxes: BoxLimit = field(
        default=MAX_BOXES,
        metadata={"help": "Boxes a completion may hold: more is a format failure (matching is quadratic in them)."},
    )


@dataclass(slots=True)
class RewardBreakdown:
    """One completion's reward and the parts it is made of, for logging and inspection."""

    reward: float
    format_ok: bool
    case: str  # format_fail | both_empty | missed | false_alarm | matched
    r_box: float = 0.0
    r_desc: float = 0.0
    r_imp: float = 0.0
    n_gt: int = 0
    n_pred: int = 0
    n_matched: int = 0
    reason: str | None = None


_LABEL_CODE = {"artifact": 0, "misalignment": 1}


Truths = Sequence[Sequence[Defect]]  # one ground-truth defect list per completion
Embedder = CachedEmbedder | None


def score(parsed: Sequence[ParseResult], gts: Truths, embedder: Embedder, cfg: RewardConfig | None = None) -> list:
    """Rewards (:class:`RewardBreakdown` each) for parsed completions against their ground truth (aligned)."""
    cfg = cfg or RewardConfig()
    if len(parsed) != len(gts):
        raise ValueError(f"{len(parsed)} completions but {len(gts)} ground-truth rows")
    out: list[RewardBreakdown] = []
    # -- cases, and the completions that need matching (positional arguments: fields in declaration order)
    todo: list[int] = []
    both_empty, missed, false_alarm = cfg.w_box * cfg.both_empty, cfg.w_box * cfg.missed, cfg.w_box * cfg.false_alarm
    add = out.append
    for i, (res, g) in enumerate(zip(parsed, gts)):
        ng, npred = len(g), len(res.defects)
        if ng > cfg.max_boxes:
            raise ValueError(f"ground truth of completion {i}: {ng} boxes, more than max_boxes {cfg.max_boxes}")
        if not res.format_ok or npred > cfg.max_boxes:
            why = res.reason if not res.format_ok else f"{npred} boxes, more than max_boxes {cfg.max_boxes}"
            add(RewardBreakdown(cfg.format_fail, False, "format_fail", 0.0, 0.0, 0.0, ng, 0, 0, why))
        elif ng and npred:
            add(RewardBreakdown(0.0, True, "matched", 0.0, 0.0, 0.0, ng, npred))
            todo.append(i)
        elif ng:
            add(RewardBreakdown(missed, True, "missed", cfg.missed, 0.0, 0.0, ng))
        elif npred:
            add(RewardBreakdown(false_alarm, True, "false_alarm", cfg.false_alarm, 0.0, 0.0, 0, npred))
        else:
            add(RewardBreakdown(both_empty, True, "both_empty", cfg.both_empty))
    if not todo:
        return out

    # -- boxes, labels and importances as arrays. A prompt's generations share one ground-truth list, so each
    # distinct list (by identity: SDGReward hands equal cells over as one object) is laid out once.
    g_objs: list[Defect] = []
    p_objs: list[Defect] = []
    seen: dict[int, int] = {}
    g_first: list[int] = []
    for i in todo:
        g = gts[i]
        at = seen.get(id(g))
        if at is None:
            at = seen[id(g)] = len(g_objs)
            g_objs.extend(g)
        g_first.append(at)
        p_objs.extend(parsed[i].defects)
    ng_ = np.fromiter((len(gts[i]) for i in todo), dtype=np.intp, count=len(todo))
    np_ = np.fromiter((len(parsed[i].defects) for i in todo), dtype=np.intp, count=len(todo))
    G, g_lab, g_imp = _columns(g_objs, float(cfg.missing_gt_importance))
    P, p_lab, p_imp = _columns(p_objs, np.nan)

    # -- every (gt, pred) pair of every completion that needs matching, in one DIoU pass
    g_start = np.asarray(g_first, dtype=np.intp)
    p_start = np.concatenate(([0], np.cumsum(np_)[:-1]))
    n_pairs = ng_ * np_
    pair_start = np.concatenate(([0], np.cumsum(n_pairs)))
    comp = np.repeat(np.arange(len(todo)), n_pairs)
    local = np.arange(pair_start[-1]) - pair_start[comp]
    gi = g_start[comp] + local // np_[comp]
    pi = p_start[comp] + local % np_[comp]
    diou = diou_rows(G[gi], P[pi])
    big = 4.0 * (int(max(ng_.max(), np_.max())) + 1)  # any compatible pair beats every incompatible one
    masked = np.where(g_lab[gi] == p_lab[pi], diou, -big)

    # -- per-completion Hungarian on its block; 1 x m and n x 1 blocks are an argmax
    flat: list[int] = []
    scores = masked.tolist()  # plain floats: a list slice and max() beat numpy calls on these tiny blocks
    for a, b, s in zip(ng_.tolist(), np_.tolist(), pair_start[:-1].tolist()):
        if a == 1 or b == 1:
            block = scores[s : s + a * b]
            flat.append(s + block.index(max(block)))  # the first maximum, as argmax
        else:
            rows, cols = hungarian(masked[s : s + a * b].reshape(a, b))
            flat.extend([s + r * b + c for r, c in zip(rows.tolist(), cols.tolist())])
    sel = np.asarray(flat, dtype=np.intp)
    sel = sel[masked[sel] > -big]
    mc, mg, mp = comp[sel], gi[sel], pi[sel]

    # -- description and importance terms of every matched pair, batched
    if embedder is not None and sel.size:
        cos = embedder.pair_cosines(
            [g_objs[j].description for j in mg.tolist()], [p_objs[j].description for j in mp.tolist()]
        )
        desc_term = np.minimum(np.maximum((cos - cfg.desc_floor) / cfg.desc_span, 0.0), 1.0)
    else:
        desc_term = np.zeros(sel.size)
    imp_term = 1.0 - np.abs(p_imp[mp] - g_imp[mg]) / cfg.imp_span
    imp_term = np.where(imp_term > 0.0, np.minimum(imp_term, 1.0), 0.0)  # NaN (no predicted importance) -> 0

    n = len(todo)
    sum_diou = np.bincount(mc, weights=masked[sel], minlength=n)
    sum_desc = np.bincount(mc, weights=desc_term, minlength=n)
    sum_imp = np.bincount(mc, weights=imp_term, minlength=n)
    n_match = np.bincount(mc, minlength=n)
    norm = np.maximum(np.maximum(ng_, np_), 1)
    unmatched = (ng_ - n_match) + (np_ - n_match)
    r_box = np.clip((sum_diou - cfg.unmatched * unmatched) / norm, -1.0, 1.0)
    r_desc = sum_desc / norm
    r_imp = sum_imp / norm
    total = cfg.w_box * r_box + cfg.w_desc * r_desc + cfg.w_imp * r_imp
    for i, t, rb, rd, ri, nm in zip(
        todo, total.tolist(), r_box.tolist(), r_desc.tolist(), r_imp.tolist(), n_match.tolist()
    ):
        o = out[i]
        o.reward, o.r_box, o.r_desc, o.r_imp, o.n_matched = t, rb, rd, ri, nm
    return out


def reward_batch(completions: Sequence[Any], gts: Truths, embedder: Embedder, cfg: RewardConfig | None = None) -> list:
    """Parse and score one batch of completions (a :class:`RewardBreakdown` each): the reward's whole path, as
    :class:`SDGReward` runs it.

    The batch makes thousands of small dicts, lists and records that die within the call, so the cyclic
    collector is paused for it (see :func:`~sdg_data.io.gc_pause.gc_paused`).
    """
    cfg = cfg or RewardConfig()
    with gc_paused():
        parsed = [_parse_or_fail(c, cfg.box_order) for c in completions]
        return score(parsed, gts, embedder, cfg)


def _parse_or_fail(completion: Any, order: BoxOrder) -> ParseResult:
    """The parser's verdict; should the parser ever raise, that one completion is a format failure (reward -1)
    instead of an exception that kills the whole GRPO step."""
    try:
        return parse_response(completion, order=order)
    except Exception as exc:  # noqa: BLE001  the parser's contract is to never raise; this guards the batch
        why = f"unparseable completion ({type(exc).__name__})"
        return ParseResult(defects=[], format_ok=False, reason=why, issues=[why])


_box_of, _label_of, _importance_of = attrgetter("box"), attrgetter("label"), attrgetter("importance")


def _columns(defects: list[Defect], no_importance: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (n, 4), label codes (n,) and importances (n,; ``no_importance`` where missing) of the defects.

    Built with iterator pipelines that numpy consumes directly: about 3x faster than arrays of per-defect tuples.
    """
    n = len(defects)
    boxes = np.fromiter(chain.from_iterable(map(_box_of, defects)), dtype=np.float64, count=4 * n).reshape(n, 4)
    labels = np.fromiter(map(_LABEL_CODE.__getitem__, map(_label_of, defects)), dtype=np.int8, count=n)
    imps = np.array([no_importance if v is None else v for v in map(_importance_of, defects)], dtype=np.float64)
    return boxes, labels, imps.reshape(n)


def _same_cell(a: Any, b: Any) -> bool:
    return a is b or (type(a) is type(b) and isinstance(a, (str, list)) and a == b)


def gt_defects(value: Any, row: int = 0) -> list[Defect]:
    """Ground truth from a dataset column cell: a list of interchange defects, or that list as a JSON string."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except (ValueError, RecursionError) as exc:
            raise RecordError(f"row {row}", "gt_defects", f"not valid JSON ({str(exc)[:80]})") from None
    if value is None:
        return []
    if not isinstance(value, list):
        raise RecordError(f"row {row}", "gt_defects", f"must be a list of defects, got {type(value).__name__}")
    return [Defect.from_json(d, f"row {row}", f"gt_defects[{j}]") for j, d in enumerate(value)]


def summarize(results: Sequence[RewardBreakdown]) -> dict[str, float]:
    """Batch means of the reward and its components, the parse-failure rate and the case mix, for logging."""
    n = max(len(results), 1)
    ok = [r for r in results if r.format_ok]
    out = {
        "reward": sum(r.reward for r in results) / n,
        "format_fail_rate": (len(results) - len(ok)) / n,
        "parse_failures": float(len(results) - len(ok)),
    }
    for comp in ("r_box", "r_desc", "r_imp"):
        out[comp] = sum(getattr(r, comp) for r in ok) / max(len(ok), 1)
    for case in ("both_empty", "missed", "false_alarm", "matched"):
        out[f"case_{case}"] = sum(r.case == case for r in results) / n
    return out


class SDGReward:
    """A trl reward function: ``GRPOTrainer(reward_funcs=[SDGReward(...)])``.

    trl calls it with ``completions`` plus every dataset column as keyword arguments; the ground truth comes from
    the ``gt_column`` column (``gt_defects`` in the ``grpo`` dataset config). Components and the parse-failure
    count go to trl's ``log_metric`` under ``sdg/...``; the last batch's breakdowns stay in ``self.last``.
    """

    def __init__(
        self,
        embedder: str | CachedEmbedder | None = "Qwen/Qwen3-Embedding-0.6B",
        config: RewardConfig | None = None,
        gt_column: str = "gt_defects",
    ):
        self.__name__ = "sdg_reward"
        self.config = config or RewardConfig()
        self.embedder = load_embedder(embedder) if isinstance(embedder, str) else embedder
        self.gt_column = gt_column
        self.last: list[RewardBreakdown] = []

    def __call__(
        self, completions: Sequence[Any], log_metric: Callable[[str, float], None] | None = None, **kwargs: Any
    ) -> list[float]:
        if self.gt_column not in kwargs:
            raise KeyError(f"reward needs the dataset column {self.gt_column!r}; got columns {sorted(kwargs)}")
        gts: list[list[Defect]] = []
        prev: Any = None
        for i, v in enumerate(kwargs[self.gt_column]):
            # trl repeats each prompt's row once per generation, one after another: parse the cell once and hand
            # the same list to score(), which then lays it out once
            if i and _same_cell(v, prev):
                gts.append(gts[-1])
            else:
                gts.append(gt_defects(v, i))
            prev = v
        self.last = reward_batch(completions, gts, self.embedder, self.config)
        if log_metric is not None:
            for key, value in summarize(self.last).items():
                log_metric(f"sdg/{key}", value)
        return [r.reward for r in self.last]


_BREAKDOWN_FIELDS = [f.name for f in fields(RewardBreakdown)]


def breakdown_row(image_id: str, r: RewardBreakdown) -> Mapping[str, Any]:
    """One ``sdg reward`` output line (the fields are scalars: a shallow copy, not ``asdict``'s deep one)."""
    return {"image_id": image_id, **{name: getattr(r, name) for name in _BREAKDOWN_FIELDS}}


def _read_predictions(
    pred_path: str | Path, gt: Mapping[str, Any], unannotated: set[str], where: str, cfg: RewardConfig
) -> tuple[list[str], list[ParseResult], int]:
    """Each prediction line parsed as the reward parses it (``response`` text, or a ``defects`` list with the same
    item rules), with its image id; lines for images not annotated are counted and left out; a line whose id is
    not in the ground truth, or whose boxes look normalised to 0-1, is an error naming it."""
    from sdg_data.answer import normalized_box_issue, parse_defect_list
    from sdg_data.io.jsonl import InputError, iter_jsonl

    ids: list[str] = []
    parsed: list[ParseResult] = []
    skipped = 0
    for lineno, row in iter_jsonl(pred_path):
        iid = row.get("image_id") if isinstance(row, Mapping) else None
        if not isinstance(iid, str):
            raise InputError(f"{pred_path}:{lineno}: record '?' field 'image_id': missing or not a string")
        if iid in unannotated:
            skipped += 1
            continue
        if iid not in gt:
            raise InputError(f"{pred_path}:{lineno}: record {iid!r} field 'image_id': not in {where}")
        if "response" in row:
            parsed.append(parse_response(row["response"], order=cfg.box_order))
        elif "defects" in row:
            parsed.append(parse_defect_list(row["defects"], order=cfg.box_order))
        else:
            raise InputError(f"{pred_path}:{lineno}: record {iid!r} field 'response': need 'response' or 'defects'")
        norm = normalized_box_issue(parsed[-1])
        if norm:
            field, why = norm.split(": ", 1)
            raise InputError(f"{pred_path}:{lineno}: record {iid!r} field {field!r}: {why}")
        ids.append(iid)
    return ids, parsed, skipped


def reward_files(
    gt_path: str | Path,
    pred_path: str | Path,
    out_path: str | Path,
    cfg: RewardConfig,
    embedder: str | None,
    split: str | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``sdg reward``: one line per prediction with its reward and components; returns rows and a summary, which
    is also written beside the rows (``OUT-STEM.summary.json``) with the ground truth it scored against.

    Prediction lines hold raw model text under ``response`` (what GRPO scores, format gate included) or a
    ``defects`` list, which is checked with the same item rules (it has no think block to require). The ground
    truth is a records file or one ``split`` of a dataset folder; records not annotated yet are left out.
    """
    from sdg_data.io.files import write_json, write_jsonl
    from sdg_data.io.jsonl import InputError
    from sdg_data.io.truth import load_ground_truth

    truth = load_ground_truth(gt_path, split, "reward")
    gt = {r.image_id: r.defects for r in truth.records}
    where = f"split {truth.source['split']!r} of {gt_path}" if truth.source["split"] else str(gt_path)
    ids, parsed, skipped = _read_predictions(pred_path, gt, {r.image_id for r in truth.rejects}, where, cfg)
    if not ids:
        why = f" ({skipped} for images not annotated)" if skipped else ""
        raise InputError(f"{pred_path}: no predictions{why}; nothing to score")
    pairs = sum(len(gt[i]) * len(p.defects) for i, p in zip(ids, parsed))
    if pairs > MAX_PAIRS:  # memory grows with the pairs: refused before any is made
        raise InputError(f"{pred_path}: {pairs} box pairs to score, more than {MAX_PAIRS}; score the file in parts")
    emb = load_embedder(embedder) if embedder else None
    results = score(parsed, [gt[i] for i in ids], emb, cfg)
    rows = [{**breakdown_row(i, r), "coercions": p.coercions} for i, r, p in zip(ids, results, parsed)]
    write_jsonl(out_path, rows)
    summary: dict[str, Any] = dict(summarize(results))
    summary["completions"] = float(len(results))
    summary["coercions"] = sum(p.coercions for p in parsed)
    summary["not_annotated_predictions"] = skipped
    summary["missing_predictions"] = len(set(gt) - set(ids))
    summary["ground_truth"] = truth.source
    out_path = Path(out_path)
    write_json(out_path.with_name(out_path.stem + ".summary.json"), summary)
    return rows, summary
