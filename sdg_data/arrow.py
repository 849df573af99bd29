"""The Arrow form of records, for parquet shards and ``datasets``: one schema, defined once.

Provenance is free-form, so it travels as a JSON string column; everything else is typed. ``box_2d`` is a
fixed-size list of 4 int32 on the 0-1000 grid, xyxy, exactly as in the JSON form.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from sdg_data import SCHEMA_VERSION
from sdg_data.records import Defect, ImageRecord


DEFECT_TYPE = pa.struct(
    [
        pa.field("box_2d", pa.list_(pa.int32(), 4)),
        pa.field("label", pa.string()),
        pa.field("description", pa.string()),
        pa.field("importance", pa.int32()),
        pa.field("provenance", pa.string()),
    ]
)


def arrow_schema() -> pa.Schema:
    """Schema of one record row; the schema version rides in the metadata."""
    return pa.schema(
        [
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("image_path", pa.string()),
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            pa.field("caption", pa.string()),
            pa.field("generator", pa.string()),
            pa.field("seed", pa.int64()),
            pa.field("split", pa.string()),
            pa.field("defects", pa.list_(DEFECT_TYPE)),
            pa.field("provenance", pa.string()),
            pa.field("think", pa.string()),
        ],
        metadata={"sdg_schema_version": SCHEMA_VERSION},
    )


def defect_row(d: Defect) -> dict[str, Any]:
    return {
        "box_2d": d.box.to_grid(),
        "label": d.label,
        "description": d.description,
        "importance": d.importance,
        "provenance": json.dumps(d.provenance, ensure_ascii=False) if d.provenance else None,
    }


def record_row(r: ImageRecord) -> dict[str, Any]:
    return {
        "image_id": r.image_id,
        "image_path": r.image_path,
        "width": r.width,
        "height": r.height,
        "caption": r.caption,
        "generator": r.generator,
        "seed": r.seed,
        "split": r.split,
        "defects": [defect_row(d) for d in r.defects],
        "provenance": json.dumps(r.provenance, ensure_ascii=False),
        "think": r.think,
    }


_RECORD_COLUMNS = tuple(f.name for f in arrow_schema())


def dataset_shards(folder: str | Path, config: str, split: str | None = None) -> list[Path]:
    """The shards of one config of a dataset folder written by ``sdg build``: the files its last completed build
    lists in ``meta/build.summary.json`` (never a crashed or earlier build's leftovers); a glob for older folders."""
    import json

    folder = Path(folder)
    try:
        summary = json.loads((folder / "meta" / "build.summary.json").read_text(encoding="utf-8"))
        files = summary["files"][config]
        paths = [folder / f for f in files]
    except (OSError, ValueError, KeyError, TypeError):
        paths = sorted((folder / "data" / config).glob("*.parquet"))
    if split is not None:
        paths = [p for p in paths if p.name.startswith(f"{split}-")]
    return [p for p in paths if p.is_file()]


def parquet_files(path: str | Path) -> list[Path]:
    """A parquet file, or the shards of a dataset folder: its ``test`` config if it has one, else every shard."""
    p = Path(path)
    if p.is_file():
        return [p]
    if (p / "meta" / "build.summary.json").is_file():
        for config in ("test", "annotations"):
            files = dataset_shards(p, config)
            if files:
                return files
    for sub in (p / "data" / "test", p / "data", p):
        files = sorted(sub.rglob("*.parquet")) if sub.is_dir() else []
        if files:
            return files
    raise FileNotFoundError(f"{p}: no parquet shards found")


def read_parquet_records(path: str | Path) -> list[ImageRecord]:
    """Records from parquet shards (``sdg build``'s ``test`` or ``annotations`` config); image columns are skipped."""
    import pyarrow.parquet as pq

    out: list[ImageRecord] = []
    for f in parquet_files(path):
        names = pq.read_schema(f).names
        table = pq.read_table(f, columns=[c for c in _RECORD_COLUMNS if c in names])
        for row in table.to_pylist():
            defects = []
            for d in row.get("defects") or []:
                d = {k: v for k, v in d.items() if v is not None or k == "importance"}
                if isinstance(d.get("provenance"), str):
                    d["provenance"] = json.loads(d["provenance"])
                defects.append(d)
            obj = {k: v for k, v in row.items() if v is not None}
            obj["defects"] = defects
            if isinstance(obj.get("provenance"), str):
                obj["provenance"] = json.loads(obj["provenance"])
            try:
                out.append(ImageRecord.from_json(obj))
            except ValueError as exc:
                raise ValueError(f"{f}: {exc}") from None
    return out
