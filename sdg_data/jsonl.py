"""JSONL reading and writing with errors that point at the file and line, and atomic writes."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sdg_data.boxes import BoxOrder
from sdg_data.records import ImageRecord, RecordError


class InputError(ValueError):
    """Bad input file content; the message starts with ``FILE:LINE:``."""


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, object)`` for each non-blank line; a line that is not JSON raises InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None


def read_records(path: str | Path, order: BoxOrder = "xyxy", unique: bool = True) -> list[ImageRecord]:
    """Read and validate records; the first bad one raises InputError naming file, line, record, field, reason."""
    records: list[ImageRecord] = []
    seen: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        try:
            rec = ImageRecord.from_json(obj, order=order)
        except RecordError as exc:
            raise InputError(f"{path}:{lineno}: {exc}") from None
        if unique and rec.image_id in seen:
            raise InputError(
                f"{path}:{lineno}: record {rec.image_id!r} field 'image_id': duplicate of line {seen[rec.image_id]}"
            )
        seen[rec.image_id] = lineno
        records.append(rec)
    return records


def screen_records(
    path: str | Path, require: tuple[str, ...], stage: str
) -> tuple[list[tuple[int, ImageRecord, Path]], list[dict[str, Any]], int]:
    """Read a stage's input without stopping at bad lines: ``(lineno, record, image file)`` for usable lines,
    reject dicts (image id, line, stage, reason, the line itself) for the rest, and the number of lines read.

    A line is unusable if it breaks the contract, repeats an image id, lacks a ``require``d field, or names an
    image file that does not exist (paths are relative to the file's folder)."""
    path = Path(path)
    ok: list[tuple[int, ImageRecord, Path]] = []
    rejects: list[dict[str, Any]] = []
    seen: set[str] = set()
    n = 0
    for lineno, obj in iter_jsonl(path):
        n += 1
        rid = obj.get("image_id") if isinstance(obj, dict) else None
        try:
            rec = ImageRecord.from_json(obj)
            if rec.image_id in seen:
                raise RecordError(rec.image_id, "image_id", "duplicate of an earlier line")
            seen.add(rec.image_id)
            rec.require("image_path", *require)
            img = Path(rec.image_path)
            img = img if img.is_absolute() else path.parent / img
            if not img.is_file():
                raise RecordError(rec.image_id, "image_path", f"{img} does not exist")
        except RecordError as exc:
            rejects.append({"image_id": rid, "line": lineno, "stage": stage, "reason": str(exc), "record": obj})
            continue
        ok.append((lineno, rec, img))
    return ok, rejects, n


def load_records(path: str | Path, order: BoxOrder = "xyxy") -> list[ImageRecord]:
    """Records from a JSONL file, a parquet shard, or a dataset folder made by ``sdg build`` (its test split)."""
    p = Path(path)
    if p.is_dir() or p.suffix == ".parquet":
        from sdg_data.arrow import read_parquet_records

        try:
            return read_parquet_records(p)
        except FileNotFoundError as exc:
            raise InputError(str(exc)) from None
    return read_records(p, order)


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows atomically (temp file + rename), so a crash never leaves a half-written file; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def write_records(path: str | Path, records: Iterable[ImageRecord]) -> int:
    return write_jsonl(path, (r.to_json() for r in records))


def write_json(path: str | Path, obj: Any) -> None:
    """Write one JSON document atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
