"""``sdg viz``: draw each image's boxes with label and importance, for quality checks by eye."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from sdg_data.config import Positive
from sdg_data.io.arrow import SplitName
from sdg_data.io.sources import iter_images
from sdg_data.records import ImageRecord, Reject


COLORS = {"artifact": (230, 40, 40), "misalignment": (40, 90, 235)}


def text_size(width: int) -> int:
    """Font size for an image (after upscaling) ``width`` pixels wide: legible at 768 and at 2048."""
    return max(14, round(width / 48))


def draw_boxes(im: Image.Image, defects, size: int | None = None) -> Image.Image:
    """Draw numbered boxes with their label initial and importance onto ``im`` (in place, RGB), text sized for
    the image (:func:`text_size`, at least 14 px); returns ``im``. ``sdg viz`` and ``sdg refine``'s overlay."""
    from sdg_data.dataset.fonts import font

    w, h = im.size
    tag_font = font(size or text_size(w))
    d = ImageDraw.Draw(im)
    for k, defect in enumerate(defects, 1):
        color = COLORS.get(defect.label, (250, 200, 0))
        x0, y0, x1, y1 = defect.box.to_pixels(w, h)
        d.rectangle([x0, y0, x1, y1], outline=color, width=max(2, w // 300))
        tag = f"{k} {defect.label[0].upper()}{'' if defect.importance is None else f' {defect.importance}'}"
        tx0, ty0, tx1, ty1 = d.textbbox((0, 0), tag, font=tag_font)
        bx, by = max(0, min(x0, w - (tx1 - tx0) - 8)), max(0, min(y0, h - (ty1 + 6)))  # keep the tag on the image
        d.rectangle([bx, by, bx + tx1 + 6, by + ty1 + 4], fill=color)
        d.text((bx + 3, by + 2), tag, fill=(255, 255, 255), font=tag_font)
    return im


# The legend strip is bounded whatever a record holds (3,000 boxes once made a 137-megapixel strip): at most this
# many defects listed, lines per entry and lines in all; the boxes themselves are all drawn.
LEGEND_DEFECTS, LEGEND_ENTRY_LINES, LEGEND_LINES = 40, 4, 120


def _cut(text: str, most: int = 600) -> str:
    return text if len(text) <= most else text[: most - 3] + "..."


def draw_record(image: Image.Image, rec: ImageRecord, scale_to: int = 768) -> Image.Image:
    """A copy of ``image`` (upscaled so small images stay legible) with numbered boxes and a legend strip below it:
    id, generator, caption, then each defect's label, importance and description, wrapped to the image width, in
    a TrueType font that scales with the image (non-Latin text included, see :mod:`sdg_data.dataset.fonts`)."""
    from sdg_data.dataset.fonts import pick, wrap

    im = image.convert("RGB")
    if max(im.size) < scale_to:
        k = scale_to / max(im.size)
        im = im.resize((round(im.width * k), round(im.height * k)), Image.Resampling.NEAREST)
    w, h = im.size
    size = text_size(w)
    entries = [_cut(f"{rec.image_id} | {rec.generator or '?'} | {rec.caption or ''}")]
    draw_boxes(im, rec.defects, size)
    for k, defect in enumerate(rec.defects[:LEGEND_DEFECTS], 1):
        entries.append(_cut(f"{k}. [{defect.label}, {defect.importance}] {defect.description}"))
    if len(rec.defects) > LEGEND_DEFECTS:
        entries.append(f"... and {len(rec.defects) - LEGEND_DEFECTS} more defects (boxed above; all in the records)")
    if not rec.defects:
        entries.append("clean: no defect" if rec.annotated else "not annotated yet")
    pad, step = size // 2, round(size * 1.3)
    lines = []
    for entry in entries:
        shown, fnt = pick(entry, size)
        lines.extend((part, fnt) for part in wrap(shown, fnt, w - 2 * pad)[:LEGEND_ENTRY_LINES])
    lines = lines[:LEGEND_LINES]
    strip = Image.new("RGB", (w, step * len(lines) + 2 * pad), (250, 250, 250))
    sd = ImageDraw.Draw(strip)
    for i, (line, fnt) in enumerate(lines):
        sd.text((pad, pad + step * i), line, fill=(20, 20, 20), font=fnt)
    out = Image.new("RGB", (w, h + strip.height), (255, 255, 255))
    out.paste(im, (0, 0))
    out.paste(strip, (0, h))
    return out


@dataclass
class VizConfig:
    split: SplitName = field(
        default="all",
        metadata={"help": "for a dataset folder: the split to read"},
    )
    limit: Positive | None = field(default=None, metadata={"help": "draw at most this many images"})
    ids: str | None = field(default=None, metadata={"help": "comma-separated image ids to draw"})
    image_roots: list[str] | None = field(
        default=None,
        metadata={
            "flag": "--image-root",
            "help": "Folder that image_path may point into (repeatable). Default: the records file's folder.",
        },
    )


def visualize(
    source: str | Path,
    out_dir: str | Path,
    limit: int | None = None,
    ids: set[str] | None = None,
    image_roots: list[str | Path] | None = None,
    split: str = "all",
) -> dict:
    """Draw each record's image into ``out_dir``, named from its id made safe for paths (an id like ``../x``
    cannot write outside it). Returns the summary (also ``viz.summary.json``, with ``viz.rejects.jsonl``, as every
    stage reports)."""
    from sdg_data.io.files import output_root, write_bytes
    from sdg_data.io.paths import safe_filename
    from sdg_data.io.report import StageReport

    out_dir = output_root(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rejects: list[Reject] = []
    report = StageReport("viz")
    for rec, im in iter_images(source, image_roots, rejects, split=split):
        report.read += 1
        if ids and rec.image_id not in ids:
            report.left_out += 1
            continue
        buf = io.BytesIO()
        draw_record(im, rec).save(buf, format="PNG")
        write_bytes(out_dir / f"{safe_filename(rec.image_id)}.png", buf.getvalue())
        report.kept += 1
        if limit is not None and report.kept >= limit:
            break
    report.read += len(rejects)
    report.add(rejects)
    return report.write(out_dir)
