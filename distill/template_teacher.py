"""The offline teacher: writes the three-step think, the English descriptions and the importance scores from the
annotation alone, deterministically. It lets the whole pipeline run without a key; records it produced say so in
their provenance (``teacher: template``) and should not be mistaken for VLM-distilled data.
"""

from __future__ import annotations

from typing import Any

from sdg_data.answer import render_response
from sdg_data.boxes import Box
from sdg_data.records import Defect, count_words


NAME = "template-teacher/v1"


def _position(b: Box) -> str:
    cx, cy = b.center_share()
    row = "upper" if cy < 1 / 3 else "lower" if cy > 2 / 3 else "middle"
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else "centre"
    if row == "middle" and col == "centre":
        return "centre"
    if row == "middle":
        return f"middle {col}"
    return f"{row} {col}" if col != "centre" else f"{row} centre"


def _share(b: Box) -> float:
    return b.area_share


def _size(b: Box) -> str:
    s = _share(b)
    return "a large" if s >= 0.2 else "a medium" if s >= 0.05 else "a small" if s >= 0.01 else "a tiny"


def _shape(b: Box) -> str:
    r = (b.width + 1e-9) / (b.height + 1e-9)
    return "wide" if r > 1.6 else "tall" if r < 0.625 else "roughly square"


def rubric_importance(label: str, b: Box) -> int:
    """The rubric's criteria, coarsely: a bigger, more central defect matters more; misalignments change meaning."""
    score = 50 if label == "artifact" else 55
    s = _share(b)
    score += 25 if s >= 0.25 else 15 if s >= 0.1 else 5 if s >= 0.03 else -20 if s < 0.005 else 0
    cx, cy = b.center_share()
    off = max(abs(cx - 0.5), abs(cy - 0.5))
    score += 10 if off < 0.2 else -10 if off > 0.4 else 0
    return max(1, min(100, score))


def _note(fact: dict[str, Any]) -> str:
    note = " ".join(str(fact.get("annotator_note") or "").split()).rstrip(".。")
    return note or f"an unspecified {fact['label']}"


def describe(fact: dict[str, Any], min_words: int = 18, max_words: int = 45) -> str:
    b = Box.from_grid(fact["box_2d"])
    kind = "Rendering artifact" if fact["label"] == "artifact" else "Mismatch with the caption"
    text = (
        f"{kind}: {_note(fact)}. The flaw lies in the {_position(b)} of the image, covering {_size(b)} "
        f"{_shape(b)} region where this evidence is directly visible."
    )
    if count_words(text) < min_words:
        text += " It stands out on close inspection of that region and should be corrected."
    words = text.split()
    if count_words(text) > max_words:  # keep the longest prefix within the limit (binary search: a note of any
        lo, hi = 1, len(words)  # length costs n log n, not n^2)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if count_words(" ".join(words[:mid])) <= max_words else (lo, mid - 1)
        words = words[:lo]
    return " ".join(words).rstrip(",;:") + ("" if words[-1].endswith(".") else ".")


def think_text(caption: str, fact_list: list[dict[str, Any]]) -> str:
    lines = [
        "### Step 1: Caption Understanding",
        f'The caption asks for: "{caption.strip()}". '
        "The image should show these subjects with the stated attributes, relations and style.",
    ]
    lines.append("### Step 2: Visual Analysis & Defect Spotting (Issue Summary)")
    if not fact_list:
        lines.append("- No defect: the subjects, attributes and style match the caption and the rendering is clean.")
    for f in fact_list:
        cat = "Artifact" if f["label"] == "artifact" else "Misalignment"
        lines.append(f"- {cat}: {_note(f)}.")
    lines.append("### Step 3: Localization (Box-by-Box Grounding)")
    if not fact_list:
        lines.append("- Nothing to localize.")
    for k, f in enumerate(fact_list, 1):
        b = Box.from_grid(f["box_2d"])
        lines.append(
            f"- Box {k} ({f['label']}): in the {_position(b)} of the image, {_size(b)} {_shape(b)} region "
            f"around the affected part."
        )
    return "\n".join(lines)


def respond(
    caption: str,
    fact_list: list[dict[str, Any]],
    min_words: int = 18,
    max_words: int = 45,
    keep_importance: bool = True,
) -> str:
    """A full teacher reply (think + answer) for one image, keeping the human boxes and labels as given."""
    defects = []
    for f in fact_list:
        b = Box.from_grid(f["box_2d"])
        imp = f.get("annotator_importance") if keep_importance else None
        defects.append(
            Defect(b, f["label"], describe(f, min_words, max_words), imp or rubric_importance(f["label"], b))
        )
    return render_response(think_text(caption, fact_list), defects)
