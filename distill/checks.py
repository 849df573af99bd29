"""What a teacher reply must satisfy before it becomes training data. Each failed rule is a reason string, so a
retry can tell the teacher what to fix and a reject says why."""

from __future__ import annotations

import re
from collections import Counter

from distill.config import DistillConfig
from sdg_data.answer import parse_response
from sdg_data.records import Defect, ImageRecord, count_words


STEP_HEADINGS = ("### Step 1", "### Step 2", "### Step 3")
_COORDS = re.compile(r"\[\s*-?\d+(?:\.\d+)?\s*(?:,\s*-?\d+(?:\.\d+)?\s*){3}\]|box_2d|\(\s*\d+\s*,\s*\d+\s*\)")


def check_reply(text: str, record: ImageRecord, cfg: DistillConfig) -> tuple[str | None, list[Defect], list[str]]:
    """Returns ``(think, defects, problems)``; the reply is usable only when ``problems`` is empty.

    The defects come back in the teacher's order (Step 3 follows it), each carrying the annotator's note and
    importance in its provenance; the annotator's importance wins when the config keeps it.
    """
    res = parse_response(text)
    problems: list[str] = []
    if not res.format_ok:
        problems.append(f"format: {res.reason}")
    think = res.think or ""
    missing = [h for h in STEP_HEADINGS if h not in think]
    if missing:
        problems.append(f"think lacks the headings {missing}")
    if _COORDS.search(think):
        problems.append("think contains coordinates")
    human = Counter((tuple(d.box.to_grid()), d.label) for d in record.defects)
    given = Counter((tuple(d.box.to_grid()), d.label) for d in res.defects)
    if given != human:
        lost, added = human - given, given - human
        if len(res.defects) != len(record.defects):
            problems.append(f"boxes: {len(res.defects)} returned, {len(record.defects)} annotated")
        if lost:
            problems.append(f"boxes changed or dropped: {[list(b) + [lab] for b, lab in lost]}")
        if added:
            problems.append(f"boxes not in the annotation: {[list(b) + [lab] for b, lab in added]}")
    by_key: dict[tuple, list[Defect]] = {}
    for d in record.defects:
        by_key.setdefault((tuple(d.box.to_grid()), d.label), []).append(d)
    out: list[Defect] = []
    for i, d in enumerate(res.defects):
        n = count_words(d.description)
        if not cfg.min_words <= n <= cfg.max_words:
            problems.append(f"item {i}: description has {n} words (needs {cfg.min_words}-{cfg.max_words})")
        if _COORDS.search(d.description):
            problems.append(f"item {i}: description contains coordinates")
        if d.importance is None:
            problems.append(f"item {i}: no importance")
        pool = by_key.get((tuple(d.box.to_grid()), d.label))
        src = pool.pop(0) if pool else None
        prov = {}
        imp = d.importance
        if src is not None:
            prov["annotator_description"] = src.description
            if src.importance is not None:
                prov["annotator_importance"] = src.importance
                if cfg.keep_annotator_importance:
                    imp = src.importance
            prov.update({k: v for k, v in src.provenance.items() if k not in prov})
        out.append(Defect(d.box, d.label, d.description, imp, prov))
    return (res.think, out, problems)
