"""Files we write: atomically (a crash never leaves half a file), never onto an input or through a link, with
configured keys masked; and the append-only sinks long jobs resume from."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from sdg_data.io.jsonl import dumps_row, iter_jsonl
from sdg_data.io.secrets import mask_bytes, redact, secret_values
from sdg_data.records import ImageRecord


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class OutputError(OSError):
    """An output that would land on an input, or be written through a link: refused before a byte is written."""


# ------------------------------------------------------------------ output folders: nothing through a link
_OUTPUT_ROOTS: list[str] = []


def output_root(folder: str | Path) -> Path:
    """Declare ``folder`` a stage's output folder. From then on, in this process, every file written, renamed or
    removed below it (:func:`atomic_file`, :class:`AppendSink`, :func:`remove_output`, :func:`files_below`) has
    each folder on its way checked: a link there (planted by a folder from elsewhere, or left by anyone) is
    refused, so nothing reaches outside the folder's real tree. The folder itself may be a link: the user named
    it."""
    root = os.path.abspath(folder)
    if root not in _OUTPUT_ROOTS:
        _OUTPUT_ROOTS.append(root)
    return Path(folder)


def check_output(path: str | Path) -> None:
    """OutputError when a folder between a declared output root and ``path`` is a link or not a folder (the final
    name is the writer's business: the atomic writers replace a link there, never follow it)."""
    full = os.path.abspath(path)
    for root in _OUTPUT_ROOTS:
        if not full.startswith(root.rstrip(os.sep) + os.sep):
            continue
        here = root
        for part in full[len(root.rstrip(os.sep)) + 1 :].split(os.sep)[:-1]:
            here = os.path.join(here, part)
            try:
                mode = os.lstat(here).st_mode
            except FileNotFoundError:
                break
            if stat.S_ISLNK(mode):
                raise OutputError(
                    f"{here} is a symbolic link inside the output folder {root}: nothing is written, moved or "
                    "deleted through one (remove the link)"
                )
            if not stat.S_ISDIR(mode):
                raise OutputError(f"{here} is in the way of an output: it is not a folder (move it away)")


def remove_output(path: str | Path) -> bool:
    """Remove one file below an output folder, never through a link on the way (a link at ``path`` itself is
    removed as a link, what it points to untouched). True if something was removed."""
    check_output(path)
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def files_below(folder: str | Path) -> Iterator[Path]:
    """Regular files under ``folder``, walked without following a link to a folder (a link is not descended)."""
    for here, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(here, d))]
        for name in files:
            p = os.path.join(here, name)
            try:
                if stat.S_ISREG(os.lstat(p).st_mode):
                    yield Path(p)
            except OSError:
                continue


@contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on a clean exit it replaces ``path`` (a crash never leaves a half-written
    file). The file gets the mode a plain ``open`` would give (0666 less the umask), like every file we write.
    Below a declared output root, no folder on the way may be a link (:func:`check_output`)."""
    path = Path(path)
    check_output(path)
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
    for tmp in files_below(folder):  # never through a link: a planted one cannot aim the sweep elsewhere
        if not (tmp.name.startswith(".") and tmp.name.endswith(".tmp")):
            continue
        try:
            pid = int(tmp.name.split(".")[-3])
            os.kill(pid, 0)
            continue  # that process still runs
        except ProcessLookupError:
            pass
        except (ValueError, IndexError, PermissionError):
            continue
        removed += remove_output(tmp)
    return removed


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes atomically (a temp file renamed over the name: a link there is replaced, not followed), with
    configured keys masked as every writer masks them (:func:`sdg_data.io.secrets.mask_bytes`)."""
    with atomic_file(path, "wb") as f:
        f.write(mask_bytes(data))


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically, with configured keys masked."""
    with atomic_file(path) as f:
        f.write(redact(text))


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


def open_append(path: str | Path) -> IO[str]:
    """A text file opened for appending, never through a link (O_NOFOLLOW) and never anything but a regular file
    (a FIFO there would block or feed another process)."""
    check_output(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if os.path.islink(path):
            raise OutputError(
                f"{path} is a symbolic link: an output is never written through one (remove it)"
            ) from None
        raise exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutputError(f"{path} is not a regular file: an output is only appended to a file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "a", encoding="utf-8")


def repair_torn_tail(path: str | Path) -> bool:
    """Cut a last line that a killed writer left without its newline (that record is redone); True if cut."""
    path = Path(path)
    refuse_link(path)
    if not path.exists():
        return False
    if not stat.S_ISREG(os.lstat(path).st_mode):
        raise OutputError(f"{path} is not a regular file: an output is only appended to a file")
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
        check_output(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_torn_tail(self.path)  # refuses a link
        self.fsync = fsync
        self._f = open_append(self.path)

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
