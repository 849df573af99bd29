"""``sdg viz``: draw each image's boxes with label and importance, for quality checks by eye."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw

from sdg_data.records import ImageRecord


COLORS = {"artifact": (230, 40, 40), "misalignment": (40, 90, 235)}


def draw_record(image: Image.Image, rec: ImageRecord, scale_to: int = 768) -> Image.Image:
    """A copy of ``image`` (upscaled so small images stay legible) with numbered boxes and a legend strip."""
    im = image.convert("RGB")
    if max(im.size) < scale_to:
        k = scale_to / max(im.size)
        im = im.resize((round(im.width * k), round(im.height * k)), Image.Resampling.NEAREST)
    w, h = im.size
    lines = [f"{rec.image_id} | {rec.generator or '?'} | {(rec.caption or '')[:90]}"]
    d = ImageDraw.Draw(im)
    for k, defect in enumerate(rec.defects, 1):
        color = COLORS.get(defect.label, (250, 200, 0))
        x0, y0, x1, y1 = defect.box.to_pixels(w, h)
        d.rectangle([x0, y0, x1, y1], outline=color, width=max(2, w // 300))
        tag = f"{k} {defect.label[0].upper()}{'' if defect.importance is None else f' {defect.importance}'}"
        d.rectangle([x0, y0, x0 + 7 * len(tag) + 6, y0 + 14], fill=color)
        d.text((x0 + 3, y0 + 1), tag, fill=(255, 255, 255))
        lines.append(f"{k}. [{defect.label}, {defect.importance}] {defect.description[:120]}")
    if not rec.defects:
        lines.append("clean: no defect")
    strip = Image.new("RGB", (w, 16 * len(lines) + 8), (250, 250, 250))
    sd = ImageDraw.Draw(strip)
    for i, line in enumerate(lines):
        sd.text((6, 4 + 16 * i), line, fill=(20, 20, 20))
    out = Image.new("RGB", (w, h + strip.height), (255, 255, 255))
    out.paste(im, (0, 0))
    out.paste(strip, (0, h))
    return out


def iter_images(source: str | Path):
    """(record, PIL image) from a records JSONL (paths relative to it) or a dataset folder's annotations."""
    source = Path(source)
    if source.is_dir():
        import pyarrow.parquet as pq

        from sdg_data.arrow import read_parquet_records

        shards = sorted((source / "data" / "annotations").glob("*.parquet"))
        if not shards:
            raise FileNotFoundError(f"{source}: no data/annotations/*.parquet (build the dataset first)")
        for shard in shards:
            recs = read_parquet_records(shard)
            images = pq.read_table(shard, columns=["image"]).column("image").to_pylist()
            for rec, cell in zip(recs, images):
                yield rec, Image.open(io.BytesIO(cell["bytes"]))
        return
    from sdg_data.jsonl import read_records

    for rec in read_records(source):
        rec.require("image_path")
        p = Path(rec.image_path)
        yield rec, Image.open(p if p.is_absolute() else source.parent / p)


def visualize(source: str | Path, out_dir: str | Path, limit: int | None = None, ids: set[str] | None = None) -> int:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    for rec, im in iter_images(source):
        if ids and rec.image_id not in ids:
            continue
        draw_record(im, rec).save(out_dir / f"{rec.image_id}.png")
        n += 1
        if limit is not None and n >= limit:
            break
    return n
