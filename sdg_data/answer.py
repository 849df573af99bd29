"""The SDG answer format: render ``<think>...</think><answer>[...]</answer>`` and parse model text back.

:func:`parse_response` never raises. It returns the defects it could recover plus the paper's format verdict
(used as the GRPO reward's gate): a ``<think>`` block is present, ``<answer>`` holds JSON (a json code fence is
allowed) that parses to a list, and every item has a numeric 4-number ``box_2d`` with x0 < x1 and y0 < y1, a
label and a ``description`` (or ``desc``). We also fail items whose label is not ``artifact`` / ``misalignment``
(so a policy cannot dodge the unmatched-box penalty with a made-up label) and an unclosed ``<answer>``.
Coordinates outside 0-1000 are clamped (not a format failure); every fix and drop is listed in ``issues``, and
every value read as something other than what was written (an importance given as text, rounded, clamped or
dropped; a description that is not text; a label in other case; a clamped box) is counted in ``coercions``: the
record readers refuse such values in ground truth, so a score counts and reports them in predictions.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from sdg_data.boxes import GRID, Box, BoxOrder
from sdg_data.records import IMPORTANCE_MAX, IMPORTANCE_MIN, LABELS, MAX_DEFECTS, Defect, clean_text


_LABEL_SET = frozenset(LABELS)
_NUM = (int, float)
_NUM_TYPES = frozenset(_NUM)
_DECODER = json.JSONDecoder()
_BIG = 1e15  # beyond this a number is no coordinate or importance (and some would not fit a float)
_new_box = tuple.__new__  # Box(...) without the named tuple's Python-level __new__: 0.1 us, not 0.25


@dataclass(slots=True)
class ParseResult:
    """What a model's text says: recovered defects, the format verdict and why it failed, the think text."""

    defects: list[Defect]
    format_ok: bool
    reason: str | None = None
    think: str | None = None
    issues: list[str] = field(default_factory=list)
    coercions: int = 0  # values read as something else than written (text importance, rounding, clamps, drops)


def completion_text(completion: Any) -> str:
    """The text of one completion as trl hands it over: a string, or conversational ``[{"role", "content"}]``."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(completion_text(m) for m in completion)
    if isinstance(completion, dict):
        content = completion.get("content", completion.get("text", ""))
        if isinstance(content, list):  # content blocks: [{"type": "text", "text": ...}]
            return "".join(b.get("text", "") for b in content if isinstance(b, dict))
        return content if isinstance(content, str) else ""
    return ""


def defect_to_answer_item(d: Defect, order: BoxOrder = "xyxy") -> dict[str, Any]:
    item: dict[str, Any] = {"box_2d": d.box.to_grid(order), "label": d.label, "description": d.description}
    if d.importance is not None:
        item["importance"] = d.importance
    return item


def render_answer(defects: Sequence[Defect], indent: int | None = None, order: BoxOrder = "xyxy") -> str:
    """The JSON list that goes inside ``<answer>``; ``[]`` for a clean image."""
    return json.dumps([defect_to_answer_item(d, order) for d in defects], ensure_ascii=False, indent=indent)


def render_response(think: str, defects: Sequence[Defect], indent: int | None = None) -> str:
    """A full target response: the think block, then the answer block."""
    return f"<think>\n{think.strip()}\n</think>\n<answer>{render_answer(defects, indent)}</answer>"


# --------------------------------------------------------------------------- parsing
def _strip_fence(body: str) -> str:
    start = body.find("```")
    if start < 0:
        return body
    nl = body.find("\n", start + 3)
    inner_start = start + 3
    tag = body[inner_start : nl if nl >= 0 else len(body)].strip()
    if nl >= 0 and (not tag or tag.isalpha()):
        inner_start = nl + 1
    elif body.startswith("json", inner_start):
        inner_start += 4
    end = body.find("```", inner_start)
    return body[inner_start : end if end >= 0 else len(body)]


def _salvage_items(body: str) -> list[Any]:
    """Complete top-level values of a broken or truncated JSON list, in order, up to the first broken one."""
    start = body.find("[")
    if start < 0:
        return []
    out: list[Any] = []
    i, n = start + 1, len(body)
    while i < n:
        while i < n and body[i] in " \t\r\n,":
            i += 1
        if i >= n or body[i] == "]":
            break
        try:
            value, i = _DECODER.raw_decode(body, i)
        except (json.JSONDecodeError, RecursionError, ValueError, MemoryError):
            break
        out.append(value)
    return out


_BROKEN = object()  # "not parsed yet"; None is a valid JSON value


class _Unparseable(ValueError):
    """JSON the stdlib cannot turn into a value at all: nesting past the recursion limit, a number of thousands
    of digits. Carries a reason worded like a JSONDecodeError's ``msg``."""

    def __init__(self, msg: str):
        super().__init__(msg)
        self.msg, self.pos = msg, 0


def _loads(body: str) -> Any:
    """orjson (about 3x the stdlib on answer-sized lists: this is the reward's hot path); what it rejects goes to
    the stdlib, which also takes NaN, Infinity and lone surrogates and words the error the user sees.

    Hostile text must not raise anything but a decode error: nesting deeper than the stack (RecursionError) and
    integers past Python's digit limit (ValueError) become :class:`_Unparseable`."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise _Unparseable("nested too deeply") from None
    except (ValueError, MemoryError) as exc:
        raise _Unparseable(f"unreadable value ({_short(exc)})") from None


def _short(value: Any, limit: int = 60) -> str:
    """``str(value)`` cut to ``limit`` characters, for messages; never raises (deep nesting, 5000-digit ints)."""
    try:
        text = str(value)
    except (ValueError, RecursionError, MemoryError):
        return f"<{type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[:limit] + "..."


def _loose_list(body: str) -> Any:
    """Python-literal fallback (single quotes, True/None) for otherwise unparseable answers.

    Only a body that can hold a whole list literal is tried: one that ends in ``]`` or ``)``, or has a comment.
    A truncated generation (the usual broken answer) cannot, and compiling it just to fail costs about 70 us.
    """
    body = body.strip()
    if len(body) > 200_000 or not body or (body[-1] not in "])" and "#" not in body):
        return None
    try:
        return ast.literal_eval(body)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None


def _importance(value: Any, i: int, issues: list[str]) -> int | None:
    """An importance outside the contract (integer 1-100 or null) as the scorers read it, each change an issue
    (every call is one coercion: the caller counts it)."""
    if value is None:
        return None
    shown = _short(value)
    if isinstance(value, str):
        text = value
        try:
            value = float(value.strip())
        except ValueError:
            issues.append(f"item {i}: importance {_short(value)!r} is not a number, dropped")
            return None
        if value == value and -_BIG < value < _BIG and value == int(value) and 1 <= value <= 100:
            issues.append(f"item {i}: importance {_short(text)!r} is text, coerced to {int(value)}")
            return int(value)
        shown = f"{_short(text)!r} (text)"
    if type(value) not in _NUM or value != value:
        issues.append(f"item {i}: importance {shown} is not a number, dropped")
        return None
    if not -_BIG < value < _BIG:  # inf, 1e999, 400-digit integers: clamp without converting
        c = IMPORTANCE_MAX if value > 0 else IMPORTANCE_MIN
        issues.append(f"item {i}: importance {shown} clamped to {c}")
        return c
    v = int(value + 0.5) if value >= 0 else int(value - 0.5)
    if v < IMPORTANCE_MIN or v > IMPORTANCE_MAX:
        c = min(IMPORTANCE_MAX, max(IMPORTANCE_MIN, v))
        issues.append(f"item {i}: importance {shown} clamped to {c}")
        return c
    if v != value:
        issues.append(f"item {i}: importance {shown} is not an integer, rounded to {v}")
    return v


def _parse_items(data: list[Any], order: BoxOrder, issues: list[str]) -> tuple[list[Defect], str | None, int]:
    """Check each answer item; keep the usable ones. Returns the defects, the first format failure and the number
    of values coerced (each one also an issue).

    This is the reward's hot path (about 1 us an item): plain type checks, no helpers on the happy path.
    """
    failures: list[str] = []
    defects: list[Defect] = []
    coerced = 0
    num = _NUM_TYPES
    for i, item in enumerate(data):
        if type(item) is not dict:
            failures.append(f"item {i}: not an object")
            continue
        raw = item.get("box_2d")
        if raw is None:
            raw = item.get("bbox_2d")
            if raw is None:
                failures.append(f"item {i}: no box_2d")
                continue
            failures.append(f"item {i}: key 'bbox_2d' instead of 'box_2d'")
        if type(raw) is not list or len(raw) != 4:
            failures.append(f"item {i}: box_2d must be 4 numbers, got {_short(raw)}")
            continue
        a, b, c, e = raw
        if type(a) not in num or type(b) not in num or type(c) not in num or type(e) not in num:
            failures.append(f"item {i}: box_2d must be 4 numbers, got {_short(raw)}")
            continue
        if not (-_BIG < a < _BIG and -_BIG < b < _BIG and -_BIG < c < _BIG and -_BIG < e < _BIG):
            failures.append(f"item {i}: box_2d holds a non-finite or out-of-range number: {_short(raw)}")
            continue
        if order == "xyxy":
            x0, y0, x1, y1 = a, b, c, e
        else:
            y0, x0, y1, x1 = a, b, c, e
        if not (x0 < x1 and y0 < y1):
            failures.append(f"item {i}: box_2d {raw} is inverted or empty (needs x0 < x1 and y0 < y1)")
            continue
        if x0 < 0 or y0 < 0 or x1 > GRID or y1 > GRID:
            x0, y0 = max(0.0, x0), max(0.0, y0)
            x1, y1 = min(float(GRID), x1), min(float(GRID), y1)
            if not (x0 < x1 and y0 < y1):
                issues.append(f"item {i}: box_2d {raw} lies outside the image, dropped")
                coerced += 1
                continue
            issues.append(f"item {i}: box_2d {raw} clamped to 0-{GRID}")
            coerced += 1
        label = item.get("label")
        if type(label) is not str:  # before the set lookup: a list or dict label is unhashable
            failures.append(f"item {i}: no label")
            continue
        if label not in _LABEL_SET:
            norm = label.strip().lower()
            if norm not in _LABEL_SET:
                failures.append(f"item {i}: unknown label {_short(label)!r}")
                continue
            issues.append(f"item {i}: label {_short(label)!r} coerced to {norm!r}")
            coerced += 1
            label = norm
        desc = item.get("description")
        if desc is None:
            desc = item.get("desc")
            if desc is None:
                failures.append(f"item {i}: no description")
                desc = ""
        if type(desc) is not str:
            desc = _short(desc, 1 << 30)
            issues.append(f"item {i}: description {_short(desc)} is not text, coerced to {_short(desc)!r}")
            coerced += 1
        if not desc.isascii():
            desc = clean_text(desc)
        imp = item.get("importance")
        if imp is not None and (type(imp) is not int or imp < IMPORTANCE_MIN or imp > IMPORTANCE_MAX):
            n_issues = len(issues)
            imp = _importance(imp, i, issues)
            coerced += len(issues) > n_issues  # 50.0 is an integer: no change, no issue
        defects.append(Defect(_new_box(Box, (float(x0), float(y0), float(x1), float(y1))), label, desc, imp))
    if failures:
        issues.extend(failures)
        return defects, failures[0], coerced
    return defects, None, coerced


def parse_response(text: Any, order: BoxOrder = "xyxy") -> ParseResult:
    """Parse a model response. ``order`` is the coordinate order of ``box_2d`` in the text (xyxy per the paper).

    This runs once per GRPO completion, so the common case (tags present, the answer plain JSON) takes a short
    path; everything else falls through to the repairs below it.
    """
    if not isinstance(text, str):
        text = completion_text(text)
    issues: list[str] = []  # every fix, drop and failure, in order
    reason: str | None = None  # the first format failure

    # -- think block
    think: str | None = None
    after_think = 0
    t_open = text.find("<think>")
    if t_open < 0:
        issues.append("no <think> block")
        reason = reason or issues[-1]
    else:
        t_close = text.find("</think>", t_open)
        if t_close >= 0:
            think = text[t_open + 7 : t_close].strip()
            after_think = t_close + 8
        else:
            a = text.find("<answer>", t_open)
            think = text[t_open + 7 : a if a >= 0 else len(text)].strip()
            after_think = a if a >= 0 else len(text)

    # -- answer block
    a_open = text.find("<answer>", after_think)
    if a_open < 0:
        a_open = text.find("<answer>")
    data: Any = _BROKEN
    if a_open >= 0:
        a_close = text.find("</answer>", a_open)
        if a_close < 0:
            issues.append("<answer> is not closed (truncated output?)")
            reason = reason or issues[-1]
            body = text[a_open + 8 :]
        else:
            body = text[a_open + 8 : a_close]
            try:  # the common case: plain JSON (orjson allows the whitespace around it)
                data = orjson.loads(body)
            except orjson.JSONDecodeError:
                pass
    else:
        issues.append("no <answer> block")
        reason = reason or issues[-1]
        body = text[after_think:]
        if "```" not in body:
            lb, rb = body.find("["), body.rfind("]")
            body = body[lb : rb + 1] if 0 <= lb < rb else ""

    # -- JSON, with repairs: a code fence, the stdlib's extras, Python literals, the complete items of a broken list
    if data is _BROKEN:
        if "```" in body:
            body = _strip_fence(body)
        body = body.strip()
        if not body:
            if a_open >= 0:
                issues.append("<answer> is empty")
                reason = reason or issues[-1]
            data = []
        else:
            try:
                data = _loads(body)
            except (json.JSONDecodeError, _Unparseable) as exc:
                issues.append(f"answer is not valid JSON ({exc.msg} at char {exc.pos})")
                reason = reason or issues[-1]
                data = _loose_list(body)
                if not isinstance(data, list):
                    data = _salvage_items(body)
                    if data:
                        issues.append(f"recovered {len(data)} complete item(s) from the broken list")
    if type(data) is not list:
        if isinstance(data, dict):
            issues.append("answer JSON is an object, not a list")
            reason = reason or issues[-1]
            data = [data]
        elif not isinstance(data, list):
            issues.append(f"answer JSON is a {type(data).__name__}, not a list")
            reason = reason or issues[-1]
            data = []

    if len(data) > MAX_DEFECTS:  # a flood: not parsed item by item (the cost is bounded before it is paid)
        issues.append(f"answer holds {len(data)} items, more than the {MAX_DEFECTS} a record may hold")
        return ParseResult([], False, reason or issues[-1], think, issues, 0)
    defects, item_reason, coerced = _parse_items(data, order, issues)
    reason = reason or item_reason
    return ParseResult(defects, reason is None, reason, think, issues, coerced)


def normalized_box_issue(result: ParseResult) -> str | None:
    """``defects[i].box_2d: why`` for the first parsed box that looks normalised to 0-1, or None.

    Prediction *files* stop on it with this message (a whole file written in the wrong unit would otherwise
    score as specks in a corner); the GRPO reward keeps the paper's definition and scores such boxes as boxes."""
    from sdg_data.boxes import normalized_problem

    for i, d in enumerate(result.defects):
        why = normalized_problem(d.box)
        if why:
            return f"defects[{i}].box_2d: {why}"
    return None


def parse_defect_list(items: Any, order: BoxOrder = "xyxy") -> ParseResult:
    """The same checks for an already-structured defect list (a ``defects`` field of a prediction file)."""
    issues: list[str] = []
    if not isinstance(items, list):
        why = f"defects must be a list, got {type(items).__name__}"
        return ParseResult(defects=[], format_ok=False, reason=why, issues=[why])
    if len(items) > MAX_DEFECTS:
        why = f"defects holds {len(items)} items, more than the {MAX_DEFECTS} a record may hold"
        return ParseResult(defects=[], format_ok=False, reason=why, issues=[why])
    defects, reason, coerced = _parse_items(items, order, issues)
    return ParseResult(defects, reason is None, reason, None, issues, coerced)
