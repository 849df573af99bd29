"""Files read beside an input: stage summaries and rejects, a dataset's shard list, the provenance key.

A folder that came from elsewhere (a download, a colleague's disk) can hold anything under a name we read: a link
to a secret, to ``/dev/zero`` or to a FIFO, a file of gigabytes, a list of paths outside the folder. What is read
here is read only when it is a regular file reached without a link, up to a size cap, and opened so that a FIFO
cannot block the reader; whatever fails that is treated as absent (the caller says so where it matters).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any


SIDECAR_MAX_BYTES = 16 << 20  # a stage summary is a few KB; a rejects file of 100K lines is ~50 MB at worst
REJECTS_MAX_BYTES = 256 << 20


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """``sha256:<hex>`` of a file's bytes: the identity of a records file or a shard (a copy has the same one)."""
    import hashlib

    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return f"sha256:{h.hexdigest()}"


def read_regular(path: str | Path, cap: int = SIDECAR_MAX_BYTES) -> bytes | None:
    """The bytes of ``path`` when it is a regular file (not a link, FIFO, device or folder) of at most ``cap``
    bytes; None otherwise. Opened with O_NOFOLLOW and O_NONBLOCK, checked with fstat on the open file, so a swap
    between the check and the read changes nothing."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > cap:
            return None
        chunks, left = [], cap + 1
        while left > 0:
            block = os.read(fd, min(left, 1 << 20))
            if not block:
                break
            chunks.append(block)
            left -= len(block)
        data = b"".join(chunks)
        return None if len(data) > cap else data
    except OSError:
        return None
    finally:
        os.close(fd)


CAPTION_MAX_BYTES = 64 << 10  # a prompt is a sentence or a paragraph


def read_caption(path: str | Path) -> tuple[str | None, str]:
    """The caption in a ``NAME.txt`` beside an image, and why not when there is none usable: the file must be a
    regular file reached without a link (a link to a secret would send it to a teacher or a detector server), of at
    most 64 KB, in UTF-8."""
    p = Path(path)
    if not os.path.lexists(p):
        return None, f"{p.name} is missing"
    data = read_regular(p, CAPTION_MAX_BYTES)
    if data is None:
        return None, f"{p.name} is not a regular file of at most {CAPTION_MAX_BYTES // 1024} KB (a link is not read)"
    try:
        return data.decode("utf-8").strip(), ""
    except UnicodeDecodeError:
        return None, f"{p.name} is not UTF-8 text"


def read_json_object(path: str | Path, cap: int = SIDECAR_MAX_BYTES) -> dict[str, Any] | None:
    """A JSON object from a sidecar file (see :func:`read_regular`), or None when it is absent, not a regular
    file, too large, or not a JSON object."""
    data = read_regular(path, cap)
    if data is None:
        return None
    try:
        got = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return got if isinstance(got, dict) else None


def iter_json_lines(path: str | Path, cap: int = REJECTS_MAX_BYTES) -> tuple[list[dict[str, Any]], int]:
    """The JSON-object lines of a sidecar JSONL file and the number of lines skipped as malformed (not JSON, not
    an object); ([], 0) when the file is not a regular file within ``cap``."""
    data = read_regular(path, cap)
    if data is None:
        return [], 0
    rows, bad = [], 0
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            bad += 1
            continue
        if isinstance(obj, dict):
            rows.append(obj)
        else:
            bad += 1
    return rows, bad


def regular_entries(folder: str | Path, pattern: str) -> Iterator[Path]:
    """Entries of ``folder`` matching ``pattern`` that are regular files (links and everything else skipped)."""
    for p in sorted(Path(folder).glob(pattern)):
        try:
            if stat.S_ISREG(os.lstat(p).st_mode):
                yield p
        except OSError:
            continue


def inside(folder: str | Path, rel: Any) -> Path | None:
    """``folder / rel`` when ``rel`` is a relative path that stays inside ``folder`` with no link on the way (a
    path a sidecar lists); None otherwise."""
    if not isinstance(rel, str) or not rel or "\0" in rel:
        return None
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        return None
    here = Path(folder)
    for part in p.parts:
        here = here / part
        try:
            if stat.S_ISLNK(os.lstat(here).st_mode):
                return None
        except OSError:
            return here  # not there (yet): nothing below it to follow
    return here
