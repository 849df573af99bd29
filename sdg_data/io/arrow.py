"""Records read back from the parquet shards ``sdg build`` writes (whose schema ``sdg_data.dataset.build`` defines,
once).

Provenance is free-form, so it travels as a JSON string column; everything else is typed. ``box_2d`` is a
fixed-size list of 4 int32 on the 0-1000 grid, xyxy, exactly as in the JSON form.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

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


SplitName = Literal["test", "train", "all"]
SPLIT_CHOICES: tuple[str, ...] = ("test", "train", "all")
"""What ``--split`` names in a dataset folder: the held-out images, the training images, or every image."""


class SplitError(ValueError):
    """A split that a dataset folder does not have (or has empty); the message names it and the choices."""


def build_summary(folder: str | Path) -> dict | None:
    """The dataset folder's ``meta/build.summary.json`` (its last completed build), or None when it has none. Read
    as a sidecar: a regular file reached without a link, capped in size (a downloaded folder can hold anything)."""
    from sdg_data.io.sidecar import inside, read_json_object

    path = inside(folder, "meta/build.summary.json")
    return read_json_object(path) if path is not None else None


def _regular(p: Path) -> bool:
    import stat

    try:
        return stat.S_ISREG(p.lstat().st_mode)
    except OSError:
        return False


def dataset_shards(folder: str | Path, config: str, split: str | None = None) -> list[Path]:
    """The shards of one config of a dataset folder written by ``sdg build``: the files its last completed build
    lists in ``meta/build.summary.json`` (never a crashed or earlier build's leftovers); a glob for older folders
    and plain folders of shards. ``split`` keeps one split's shards (``train-*`` / ``test-*``).

    A listed path must stay inside the folder (relative, no ``..``, no link on the way) and be a regular file: a
    downloaded folder cannot point the reader at another dataset's shards elsewhere on the disk."""
    from sdg_data.io.sidecar import inside

    folder = Path(folder)
    summary = build_summary(folder)
    listed = summary.get("files", {}).get(config) if summary and isinstance(summary.get("files"), dict) else None
    if isinstance(listed, list):
        paths = [p for p in (inside(folder, f) for f in listed) if p is not None]
    else:
        data = inside(folder, f"data/{config}")
        paths = sorted(data.glob("*.parquet")) if data is not None and data.is_dir() else []
        if not paths and summary is None:  # a plain folder of shards: every parquet file under it
            paths = sorted(p for p in folder.rglob("*.parquet") if inside(folder, str(p.relative_to(folder))))
    if split is not None:
        paths = [p for p in paths if p.name.startswith(f"{split}-") or p.parent.name == split]
    return [p for p in dict.fromkeys(paths) if _regular(p)]  # a shard listed twice is read once


def split_shards(folder: str | Path, split: str) -> list[Path]:
    """The shards holding one split's images (one row per image, every record field): ``test``, ``train`` or
    ``all``. Never another split in its place: a split with no shards is a :class:`SplitError` naming the split,
    what the folder has, and the choices."""
    if split not in SPLIT_CHOICES:
        raise SplitError(f"--split {split!r}: choose one of {', '.join(SPLIT_CHOICES)}")
    shards = dataset_shards(folder, "annotations", None if split == "all" else split)
    if shards:
        return shards
    have = {sp: len(dataset_shards(folder, "annotations", sp)) for sp in ("train", "test")}
    rows = (build_summary(folder) or {}).get("rows") or {}
    parts = [f"{sp} ({rows.get(f'annotations/{sp}', '?')} images)" for sp, n in have.items() if n]
    if not parts:
        raise SplitError(f"{folder}: no parquet shards (build the dataset first: sdg build RECORDS --out {folder})")
    hint = " or ".join(f"--split {sp}" for sp in ("train", "test") if have[sp]) + " or --split all"
    extra = (
        "; rebuild with a larger set or a test fraction that leaves images for a test split"
        if split == "test" else ""
    )  # fmt: skip
    raise SplitError(f"{folder}: the dataset has no {split!r} split (it has {', '.join(parts)}); choose {hint}{extra}")


def read_split(folder: str | Path, split: str) -> list[ImageRecord]:
    """The records of one split of a dataset folder (see :func:`split_shards`), in shard order."""
    return [r for shard in split_shards(folder, split) for r in read_parquet_records(shard)]


def read_parquet_records(path: str | Path) -> list[ImageRecord]:
    """Records from one parquet shard (``sdg build``'s ``test`` or ``annotations`` config); image columns skipped.
    A dataset folder is read by split (:func:`read_split`), never as "whatever shards it has"."""
    out: list[ImageRecord] = []
    for f in [Path(path)]:
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
