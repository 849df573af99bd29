"""The exact result structure Label Studio's editor writes for one SDG region, for tests, fixtures and tools that
write annotations through the API (review passes, migrations). Pull reads the same structure back."""

from __future__ import annotations

from typing import Any

from annotation.labeling import BOX, IMAGE, NUMBER, TEXT


def ui_region(
    rid: str,
    label: str,
    x: float,
    y: float,
    width: float,
    height: float,
    text: str | None,
    number: int | None,
    original_width: int | None,
    original_height: int | None,
    origin: str | None = "manual",
) -> list[dict[str, Any]]:
    """Rectangle + description + importance sharing the region id, each with the geometry, as the editor saves
    them (percent of the image, rotation 0, the original size the browser measured, the origin). The one writer
    of this structure: ``sdg annotate predict`` sends its pre-annotations through it too (no origin: the server
    sets ``prediction``; no size when the record has none)."""
    geo = {"x": x, "y": y, "width": width, "height": height, "rotation": 0}
    common: dict[str, Any] = {"id": rid, "to_name": IMAGE, "image_rotation": 0}
    if original_width and original_height:
        common.update(original_width=original_width, original_height=original_height)
    if origin is not None:
        common["origin"] = origin
    out = [{**common, "from_name": BOX, "type": "rectanglelabels", "value": {**geo, "rectanglelabels": [label]}}]
    if text is not None:
        out.append({**common, "from_name": TEXT, "type": "textarea", "value": {**geo, "text": [text]}})
    if number is not None:
        out.append({**common, "from_name": NUMBER, "type": "number", "value": {**geo, "number": number}})
    return out
