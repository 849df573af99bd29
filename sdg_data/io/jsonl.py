"""JSONL reading with errors that point at the file and line, and the one line format every writer uses.

Writing (atomic files, resumable append-only sinks) lives in :mod:`sdg_data.io.files`."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import orjson

from sdg_data.boxes import BoxOrder
from sdg_data.records import ImageRecord, RecordError, Reject, bad_value, has_surrogate


class InputError(ValueError):
    """Bad input file content; the message starts with ``FILE:LINE:``."""


class LineError(ValueError):
    """One line that is not usable JSON; the message is the reason (without file and line)."""


def parse_line(raw: bytes) -> Any:
    """One JSONL line -> a value; LineError with the reason otherwise. Never raises anything else.

    orjson takes the common case (and refuses invalid UTF-8, lone surrogates, NaN and nesting past 1,024). What it
    refuses goes to the stdlib so that the reason is precise and a record with a NaN or a huge number in a field
    reaches the record checks, which name the field (a model's prediction with a NaN importance is a verdict on
    the model, not a broken file)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineError(
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line); "
            "save the file as UTF-8"
        ) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LineError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise LineError("not usable JSON: nested too deeply") from None
    except (ValueError, MemoryError) as exc:  # e.g. an integer past Python's 4,300-digit limit
        raise LineError(f"not usable JSON: {str(exc).split(';')[0]}") from None
    bad = bad_value(obj)
    if bad is not None:
        rid = obj.get("image_id") if isinstance(obj, dict) else None
        rid = rid if isinstance(rid, str) and not has_surrogate(rid) else None
        raise LineError(f"record {rid or '?'!r} field {bad[0]!r}: {bad[1]}")
    return obj


MAX_LINE_BYTES = int(os.environ.get("SDG_MAX_LINE_BYTES") or 64 << 20)
"""The longest line a reader holds (64 MiB; ``$SDG_MAX_LINE_BYTES`` changes it): a record of 1,000 defects is a few
hundred KB, so a longer line is a broken or hostile file; it is skipped as a bad line without being held whole."""


def _lines(f: Any, limit: int) -> Iterator[bytes | None]:
    """The file's lines (``\\n``-ended), None for one longer than ``limit`` (read past in blocks, never held)."""
    while True:
        raw = f.readline(limit + 1)
        if not raw:
            return
        if len(raw) > limit and not raw.endswith(b"\n"):
            while (more := f.readline(1 << 20)) and not more.endswith(b"\n"):
                pass
            yield None
            continue
        yield raw


def iter_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, value)`` for each non-blank line, the value being a :class:`LineError` for a line
    that is not usable JSON or longer than :data:`MAX_LINE_BYTES`. Lines end at ``\\n`` only (U+2028 inside a
    JSON string is not a line break)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a JSONL file")
    limit = MAX_LINE_BYTES
    with path.open("rb") as f:
        for lineno, raw in enumerate(_lines(f, limit), 1):
            if raw is None:
                yield lineno, LineError(f"longer than {limit} bytes (SDG_MAX_LINE_BYTES): not read")
                continue
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                yield lineno, parse_line(raw)
            except LineError as exc:
                yield lineno, exc


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, object)`` for each non-blank line; a line that is not JSON raises InputError."""
    for lineno, obj in iter_lines(path):
        if isinstance(obj, LineError):
            raise InputError(f"{path}:{lineno}: {obj}")
        yield lineno, obj


_NOTED: set[str] = set()


def note_old_form(path: str | Path, count: int) -> None:
    """One line on stderr (once per file and process) when records used schema 1.1's "not annotated" marker, so the
    rule that reads them is never silent."""
    key = str(path)
    if not count or key in _NOTED:
        return
    _NOTED.add(key)
    import sys

    from sdg_data.io.cli_kit import printable

    print(
        printable(
            f'note: {path}: {count} record(s) say "defects": [] with provenance "annotated": false (the schema 1.1 '
            'form): read as not annotated, not clean; write "defects": null to say so in the current form'
        ),
        file=sys.stderr,
    )


def check_records(
    path: str | Path, order: BoxOrder = "xyxy", unique: bool = True
) -> Iterator[tuple[int, ImageRecord | str]]:
    """``(line, record)`` for each valid line of a records file and ``(line, "FILE:LINE: reason")`` for each bad one
    (not JSON, breaks the contract, or repeats an image id), reading on past every bad line."""
    seen: dict[str, int] = {}
    old = 0
    for lineno, obj in iter_lines(path):
        if isinstance(obj, LineError):
            yield lineno, f"{path}:{lineno}: {obj}"
            continue
        try:
            rec = ImageRecord.from_json(obj, order=order)
        except RecordError as exc:
            yield lineno, f"{path}:{lineno}: {exc}"
            continue
        if unique and rec.image_id in seen:
            yield (
                lineno,
                (f"{path}:{lineno}: record {rec.image_id!r} field 'image_id': duplicate of line {seen[rec.image_id]}"),
            )
            continue
        seen[rec.image_id] = lineno
        old += rec.old_form
        yield lineno, rec
    note_old_form(path, old)


def read_records(path: str | Path, order: BoxOrder = "xyxy", unique: bool = True) -> list[ImageRecord]:
    """Read and validate records; the first bad one raises InputError naming file, line, record, field, reason."""
    records: list[ImageRecord] = []
    for _, got in check_records(path, order, unique):
        if isinstance(got, str):
            raise InputError(got)
        records.append(got)
    return records


def usable_lines(path: str | Path, stage: str, rejects: list[Reject]) -> Iterator[tuple[int, Any]]:
    """``(line_number, value)`` of each line that is JSON; a line that is not goes to ``rejects`` with its reason."""
    for lineno, obj in iter_lines(path):
        if isinstance(obj, LineError):
            rejects.append(Reject(str(obj), stage, None, f"{path}:{lineno}", lineno))
            continue
        yield lineno, obj


def screen_records(
    path: str | Path,
    require: tuple[str, ...],
    stage: str,
    image_roots: Sequence[str | Path] = (),
    annotated: bool = False,
) -> tuple[list[tuple[int, ImageRecord, Path]], list[Reject], int]:
    """Read a stage's input without stopping at bad lines: ``(lineno, record, image file)`` for usable lines,
    a :class:`~sdg_data.records.Reject` (with the line itself) for each of the rest, and the number of lines read.

    A line is unusable if it is not JSON, breaks the contract, repeats an image id, lacks a ``require``d field, is
    not annotated yet where the stage needs a verdict (``annotated``), or names an image file that does not exist
    or lies outside the allowed roots (``image_roots``; by default the records file's folder, which relative paths
    are resolved against). The image's content is checked where it is
    used (:func:`sdg_data.io.images.check_bytes`)."""
    from sdg_data.io.paths import PathError, Resolver

    path = Path(path)
    resolver = Resolver.for_records(path, image_roots)
    ok: list[tuple[int, ImageRecord, Path]] = []
    rejects: list[Reject] = []
    seen: set[str] = set()
    old = 0
    for lineno, obj in usable_lines(path, stage, rejects):
        rid = obj.get("image_id") if isinstance(obj, dict) else None
        try:
            rec = ImageRecord.from_json(obj)
            old += rec.old_form
            if rec.image_id in seen:
                raise RecordError(rec.image_id, "image_id", "duplicate of an earlier line")
            seen.add(rec.image_id)
            rec.require("image_path", *require)
            if annotated:
                rec.require_annotated()
            try:
                img = resolver.resolve(rec.image_path)
            except PathError as exc:
                raise RecordError(rec.image_id, "image_path", str(exc)) from None
        except RecordError as exc:
            rejects.append(Reject(str(exc), stage, rid, f"{path}:{lineno}", lineno, obj))
            continue
        ok.append((lineno, rec, img))
    note_old_form(path, old)
    return ok, rejects, len(ok) + len(rejects)


InputKind = Literal["jsonl", "parquet", "dataset", "images"]


def input_kind(path: str | Path) -> InputKind:
    """What a stage was pointed at: a JSONL of records, a parquet shard, a folder ``sdg build`` wrote (it has
    ``data/``), or a plain folder of images. The one place that decides, for every stage that reads inputs."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if p.is_dir():
        if (p / "data").is_dir() or (p / "meta").is_dir() or next(p.rglob("*.parquet"), None) is not None:
            return "dataset"  # an sdg build folder, or a folder of its shards
        return "images"
    if p.suffix == ".parquet":
        return "parquet"
    if p.suffix in (".jsonl", ".json"):
        return "jsonl"
    raise InputError(f"{p}: give a records JSONL, a parquet shard, an sdg build folder or a folder of images")


def load_records(path: str | Path, order: BoxOrder = "xyxy", split: str = "test") -> list[ImageRecord]:
    """Records from a JSONL file, a parquet shard, or one named ``split`` of a dataset folder made by ``sdg build``
    (``test``, ``train`` or ``all``; a split the folder lacks is an error naming it, never another split)."""
    p = Path(path)
    kind = input_kind(p) if p.exists() else "jsonl"
    if kind == "dataset":
        from sdg_data.io.arrow import read_split

        return read_split(p, split)
    if kind == "parquet":
        from sdg_data.io.arrow import read_parquet_records

        return read_parquet_records(p)
    return read_records(p, order)


def _tokens(value: Any) -> Any:
    """A copy with each NaN / Infinity as the text JSON readers print for it (kept as evidence, not as a number)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, dict):
        return {k: _tokens(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tokens(v) for v in value]
    return value


def dumps_row(row: dict[str, Any]) -> str:
    """One output line. NaN is not JSON: a row holding one fails (a bug upstream, never written), except inside a
    reject's ``record``, the bad input kept as evidence, where it is written as the text ``"NaN"``."""
    try:
        return json.dumps(row, ensure_ascii=False, allow_nan=False)
    except ValueError:
        if not isinstance(row.get("record"), (dict, list, float)):
            raise ValueError(
                f"row {row.get('image_id')!r}: a NaN or Infinity in an output row; NaN is not JSON"
            ) from None
    try:
        safe = {**row, "record": _tokens(row["record"])}
    except RecursionError:
        safe = {**row, "record": repr(row["record"])[:2000]}
    return json.dumps(safe, ensure_ascii=False, allow_nan=False)
