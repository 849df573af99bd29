"""Records read back from the parquet shards ``sdg build`` writes (whose schema ``sdg_data.dataset.build`` defines,
once).

Provenance is free-form, so it travels as a JSON string column; everything else is typed. ``box_2d`` is a
fixed-size list of 4 int32 on the 0-1000 grid, xyxy, exactly as in the JSON form.
"""

from __future__ import annotations

import json
from pathlib import Path

from sdg_data.records import ImageRecord


# the record fields of a shard written by ``sdg build`` (its ``annotations`` and ``test`` configs; the schema is
# ``sdg_data.dataset.build._features``, the one definition): the columns read back into records, images left out
_RECORD_COLUMNS = (
    "image_id", "image_path", "width", "height", "caption", "generator", "seed", "split", "defects", "provenance",
    "think",
)  # fmt: skip


# The configs of an ``sdg build`` folder are views of two tables, ``data/train`` and ``data/test``, so each image is
# stored once: the train table has a row per SFT pair (the image dictionary-encoded within its row group), and the
# rows of epoch 0 also carry the annotation and GRPO columns. The dataset card gives each config its files, its
# columns and, where it has one row per image, the filter ``epoch == 0``; ``datasets`` applies both on load.
VIEWS: dict[str, dict] = {
    "annotations": {
        "splits": ("train", "test"),
        "columns": ["image_id", "caption", "generator", "images", "seed", "split", "width", "height", "defects",
                    "think", "provenance"],
        "first_pair": True,
    },
    "sft": {"splits": ("train",), "columns": ["image_id", "epoch", "images", "messages", "pair"], "first_pair": False},
    "grpo": {
        "splits": ("train",),
        "columns": ["image_id", "caption", "generator", "images", "prompt", "gt_defects"],
        "first_pair": True,
    },
    "test": {"splits": ("test",), "columns": ["image_id", "caption", "generator", "images", "defects"],
             "first_pair": False},
}  # fmt: skip
FIRST_PAIR = [("epoch", "==", 0)]  # one row per image: the filter of the per-image views


def read_rows(path: str | Path, columns: list[str] | None = None):
    """A shard's rows, one per image (a train table's epoch-0 rows; every row of other shards), as a pyarrow
    Table with the ``columns`` the shard has."""
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    cols = [c for c in columns if c in names] if columns is not None else None
    return pq.read_table(path, columns=cols, filters=FIRST_PAIR if "epoch" in names else None)


def image_bytes(cell) -> bytes | None:
    """The encoded bytes of an ``image`` cell or the first of an ``images`` cell."""
    cell = cell[0] if isinstance(cell, list) and cell else cell
    return cell.get("bytes") if isinstance(cell, dict) else None


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
    out: list[ImageRecord] = []
    for f in parquet_files(path):
        for row in read_rows(f, list(_RECORD_COLUMNS)).to_pylist():
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
