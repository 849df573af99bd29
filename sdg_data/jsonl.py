"""JSONL reading and writing with errors that point at the file and line, and atomic writes."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal

import orjson

from sdg_data.boxes import BoxOrder
from sdg_data.records import ImageRecord, RecordError, bad_value, has_surrogate
from sdg_data.secrets import redact, secret_values


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


def iter_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, value)`` for each non-blank line, the value being a :class:`LineError` for a line
    that is not usable JSON. Lines end at ``\\n`` only (U+2028 inside a JSON string is not a line break)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a JSONL file")
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
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


def check_records(
    path: str | Path, order: BoxOrder = "xyxy", unique: bool = True
) -> Iterator[tuple[int, ImageRecord | str]]:
    """``(line, record)`` for each valid line of a records file and ``(line, "FILE:LINE: reason")`` for each bad one
    (not JSON, breaks the contract, or repeats an image id), reading on past every bad line."""
    seen: dict[str, int] = {}
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
        yield lineno, rec


def read_records(path: str | Path, order: BoxOrder = "xyxy", unique: bool = True) -> list[ImageRecord]:
    """Read and validate records; the first bad one raises InputError naming file, line, record, field, reason."""
    records: list[ImageRecord] = []
    for _, got in check_records(path, order, unique):
        if isinstance(got, str):
            raise InputError(got)
        records.append(got)
    return records


def usable_lines(path: str | Path, stage: str, rejects: list[dict[str, Any]]) -> Iterator[tuple[int, Any]]:
    """``(line_number, value)`` of each line that is JSON; a line that is not goes to ``rejects`` with its reason."""
    for lineno, obj in iter_lines(path):
        if isinstance(obj, LineError):
            where = f"{path}:{lineno}"
            rejects.append({"image_id": None, "stage": stage, "reason": str(obj), "where": where, "line": lineno})
            continue
        yield lineno, obj


def screen_records(
    path: str | Path, require: tuple[str, ...], stage: str, image_roots: Sequence[str | Path] = ()
) -> tuple[list[tuple[int, ImageRecord, Path]], list[dict[str, Any]], int]:
    """Read a stage's input without stopping at bad lines: ``(lineno, record, image file)`` for usable lines,
    reject dicts (image id, line, stage, reason, the line itself) for the rest, and the number of lines read.

    A line is unusable if it is not JSON, breaks the contract, repeats an image id, lacks a ``require``d field, or
    names an image file that does not exist or lies outside the allowed roots (``image_roots``; by default the
    records file's folder, which relative paths are resolved against). The image's content is checked where it is
    used (:func:`sdg_data.images.check_bytes`)."""
    from sdg_data.paths import PathError, Resolver

    path = Path(path)
    resolver = Resolver.for_records(path, image_roots)
    ok: list[tuple[int, ImageRecord, Path]] = []
    rejects: list[dict[str, Any]] = []
    seen: set[str] = set()
    for lineno, obj in usable_lines(path, stage, rejects):
        rid = obj.get("image_id") if isinstance(obj, dict) else None
        try:
            rec = ImageRecord.from_json(obj)
            if rec.image_id in seen:
                raise RecordError(rec.image_id, "image_id", "duplicate of an earlier line")
            seen.add(rec.image_id)
            rec.require("image_path", *require)
            try:
                img = resolver.resolve(rec.image_path)
            except PathError as exc:
                raise RecordError(rec.image_id, "image_path", str(exc)) from None
        except RecordError as exc:
            rejects.append(
                {"image_id": rid, "stage": stage, "reason": str(exc), "where": f"{path}:{lineno}", "line": lineno,
                 "record": obj}
            )  # fmt: skip
            continue
        ok.append((lineno, rec, img))
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


def load_records(path: str | Path, order: BoxOrder = "xyxy") -> list[ImageRecord]:
    """Records from a JSONL file, a parquet shard, or a dataset folder made by ``sdg build`` (its test split)."""
    p = Path(path)
    if p.exists() and input_kind(p) in ("parquet", "dataset"):
        from sdg_data.arrow import read_parquet_records

        try:
            return read_parquet_records(p)
        except FileNotFoundError as exc:
            raise InputError(str(exc)) from None
    return read_records(p, order)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on a clean exit it replaces ``path`` (a crash never leaves a half-written
    file). The file gets the mode a plain ``open`` would give (0666 less the umask), like every file we write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class OutputError(OSError):
    """An output that would land on an input, or be written through a link: refused before a byte is written."""


def file_ids(paths: Iterable[str | Path]) -> set[tuple[int, int]]:
    """(device, inode) of each existing file: the inputs a run read, which none of its outputs may replace."""
    out = set()
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        out.add((st.st_dev, st.st_ino))
    return out


def refuse_input(dest: str | Path, inputs: set[tuple[int, int]]) -> None:
    """OutputError when ``dest`` names one of ``inputs`` (as itself or through a link), like ``cp`` refusing to
    copy a file onto itself: an output never replaces what the run read. A link at ``dest`` that leads elsewhere
    is fine: the atomic writers replace the link, never the file behind it."""
    try:
        st = os.stat(dest)
    except OSError:
        return
    if (st.st_dev, st.st_ino) in inputs:
        raise OutputError(f"{dest} is one of this run's inputs: choose an output folder that holds none of them")


def sweep_stale_temps(folder: str | Path) -> int:
    """Remove temp files (``.NAME.PID.XXXX.tmp``) that killed writers left below ``folder``: only those whose
    process is gone, so a process still writing (another rank) is never disturbed. Returns how many."""
    removed = 0
    for tmp in Path(folder).glob("**/.*.tmp"):
        try:
            pid = int(tmp.name.split(".")[-3])
            os.kill(pid, 0)
            continue  # that process still runs
        except ProcessLookupError:
            pass
        except (ValueError, IndexError, PermissionError):
            continue
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes atomically (a temp file renamed over the name: a link there is replaced, not followed)."""
    with atomic_file(path, "wb") as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically, with configured keys masked."""
    with atomic_file(path) as f:
        f.write(redact(text))


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


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows atomically, one JSON object a line, with configured keys masked; returns the count."""
    secrets = secret_values()
    n = 0
    with atomic_file(path) as f:
        for row in rows:
            line = dumps_row(row)
            f.write((redact(line, secrets) if secrets else line) + "\n")
            n += 1
    return n


def write_records(path: str | Path, records: Iterable[ImageRecord]) -> int:
    return write_jsonl(path, (r.to_json() for r in records))


def write_json(path: str | Path, obj: Any) -> None:
    """Write one JSON document atomically, with configured keys masked."""
    write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


# ------------------------------------------------------------------ resumable append-only sinks
def refuse_link(path: str | Path) -> None:
    """An output file that is a symbolic link is refused: appending or trimming it would change the file it points
    at, which may be anything (git and rsync treat a link in the way of an output the same)."""
    if os.path.islink(path):
        raise OutputError(f"{path} is a symbolic link: an output is never written through one (remove it)")


def repair_torn_tail(path: str | Path) -> bool:
    """Cut a last line that a killed writer left without its newline (that record is redone); True if cut."""
    path = Path(path)
    refuse_link(path)
    if not path.exists():
        return False
    with path.open("rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return False
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return False
        # find the last newline without reading the whole file
        pos, chunk = size, 1 << 16
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            block = f.read(pos - start)
            nl = block.rfind(b"\n")
            if nl >= 0:
                f.truncate(start + nl + 1)
                return True
            pos = start
        f.truncate(0)
        return True


def read_finished(path: str | Path, key: str = "image_id") -> dict[str, dict[str, Any]]:
    """The rows a (possibly killed) run already appended, by ``key``; a torn last line is cut first."""
    repair_torn_tail(path)
    done: dict[str, dict[str, Any]] = {}
    if Path(path).exists():
        for _, obj in iter_jsonl(path):
            if isinstance(obj, dict) and key in obj:
                done[obj[key]] = obj
    return done


class AppendSink:
    """An append-only JSONL file for long jobs: each row is flushed and fsynced as it is written, so a job killed
    at any moment loses at most the line it was writing (cut by :func:`repair_torn_tail` on the next open) and a
    rerun skips every finished row (:func:`read_finished`)."""

    def __init__(self, path: str | Path, fsync: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_torn_tail(self.path)  # refuses a link
        self.fsync = fsync
        self._f = self.path.open("a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self._f.write(redact(dumps_row(row)) + "\n")
        self._f.flush()
        if self.fsync:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> AppendSink:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
