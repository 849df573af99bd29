"""A RichHF-18K-shaped TFRecord made from SDG records (heatmaps drawn from their boxes), for the demo and tests.

    python -m sdg_data.testkit.richhf RECORDS.jsonl OUT_DIR      # OUT_DIR/test.tfrecord, OUT_DIR/captions.jsonl

Each example has RichHF's fields: ``filename`` (the image's file name), four scores, an ``artifact_map`` and a
``misalignment_map`` (PNG, 64 x 64, each type's boxes at importance / 100) and a ``prompt_misalignment_label``.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np

from sdg_data.boxes import heatmap_from_boxes
from sdg_data.io.jsonl import read_records


SIDE = 64


def _png(heat: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((heat * 255).round().astype("uint8")).save(buf, format="PNG")
    return buf.getvalue()


def write_richhf(records: str | Path, out_dir: str | Path) -> Path:
    from tfrecord import TFRecordWriter

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = TFRecordWriter(str(out / "test.tfrecord"))
    captions = []
    for rec in read_records(records):
        name = Path(rec.image_path or f"{rec.image_id}.png").name
        maps = {}
        for label in ("artifact", "misalignment"):
            mine = [d for d in rec.defects if d.label == label]
            weights = [(d.importance or 50) / 100 for d in mine]
            maps[label] = heatmap_from_boxes([d.box for d in mine], weights, SIDE, SIDE)
        writer.write({
            "filename": (name.encode(), "byte"),
            "artifact_map": (_png(maps["artifact"]), "byte"),
            "misalignment_map": (_png(maps["misalignment"]), "byte"),
            "prompt_misalignment_label": (b"", "byte"),
            "aesthetics_score": (0.5, "float"), "artifact_score": (1.0 - float(maps["artifact"].max()), "float"),
            "misalignment_score": (1.0 - float(maps["misalignment"].max()), "float"), "overall_score": (0.5, "float"),
        })  # fmt: skip
        captions.append({"filename": name, "caption": rec.caption or ""})
    writer.close()
    (out / "captions.jsonl").write_text("".join(json.dumps(c) + "\n" for c in captions), encoding="utf-8")
    return out / "test.tfrecord"


if __name__ == "__main__":
    print(write_richhf(sys.argv[1], sys.argv[2]))
