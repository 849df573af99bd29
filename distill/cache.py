"""Finished teacher work on disk, one small JSON file per (image, annotation, teacher, prompt version).

A file appears atomically (temp + rename) only when a record is done, so after a crash a rerun finds exactly the
finished records and sends the rest; nothing is requested twice, nothing half-written is trusted.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sdg_data.io.files import write_text


def cache_key(image_id: str, annotation_hash: str, teacher: str, prompt_version: str) -> str:
    """What a finished reply is filed under: a change of annotation, teacher or prompt asks again."""
    blob = json.dumps([image_id, annotation_hash, teacher, prompt_version], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class DiskCache:
    """Finished replies, one JSON file each under ``root``, written atomically: a crash loses no finished work."""

    def __init__(self, root: str | Path):
        from sdg_data.io.files import check_output, output_root

        check_output(Path(root) / "x")  # the cache folder inside the output is no link (planted, it leads away)
        self.root = output_root(root)  # and nothing below it is written through one
        self.root.mkdir(parents=True, exist_ok=True)
        self._seen: dict[str, dict[str, Any]] = {}  # entries this process wrote or read: no second file read

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The entry filed under ``key``, or None (a missing or unreadable file is a miss, never trusted)."""
        if key in self._seen:
            return self._seen[key]
        from sdg_data.io.sidecar import inside, read_json_object

        # a regular file only, reached with no link on the way (folder or file): a planted link would hand in a
        # reply nobody asked for; a missing, unreadable, torn or malformed entry is a miss, never trusted
        path = inside(self.root, f"{key[:2]}/{key}.json")
        entry = read_json_object(path) if path is not None else None
        if entry is None or not _well_formed(entry):
            return None
        self._seen[key] = entry
        return entry

    def put(self, key: str, entry: dict[str, Any]) -> None:
        """File ``entry`` under ``key`` (a temporary file renamed over the name, keys masked)."""
        write_text(self._path(key), json.dumps(entry, ensure_ascii=False))  # atomic, keys masked
        self._seen[key] = entry


def _well_formed(entry: dict[str, Any]) -> bool:
    """An entry as :meth:`DiskCache.put` writes it: attempts, a status, and a valid record or a reason."""
    if type(entry.get("attempts")) is not int or entry.get("status") not in ("ok", "rejected"):
        return False
    if entry["status"] == "rejected":
        return isinstance(entry.get("reason"), str) and isinstance(entry.get("stage"), str)
    from sdg_data.records import ImageRecord, RecordError

    try:
        ImageRecord.from_json(entry.get("record"))
    except (RecordError, TypeError):
        return False
    return True


class UsageLedger:
    """Every request, appended to ``usage.jsonl`` in the cache folder as ``[requests, prompt tokens, completion
    tokens]`` lines: ``[1, 0, 0]`` when a request is sent, ``[0, in, out]`` when its usage comes back. A killed
    run's requests (those in flight too) are on disk, so a resumed run's summary accounts for every run's
    requests, tokens and cost. A torn last line (killed mid-write) is skipped."""

    def __init__(self, path: str | Path):
        from sdg_data.io.files import check_output, refuse_link

        self.path = Path(path)
        check_output(self.path)
        refuse_link(self.path)  # appended to: a link would grow the file it points at
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = None

    def add(self, requests: int, prompt_tokens: int, completion_tokens: int) -> None:
        """Append one line, flushed at once, so a killed run's requests are counted too."""
        if self._f is None:
            from sdg_data.io.files import open_append

            self._f = open_append(self.path)  # never through a link, only a regular file; closed in close()
        self._f.write(f"[{requests},{prompt_tokens},{completion_tokens}]\n")
        self._f.flush()  # in the OS's hands: survives the process being killed

    def close(self) -> None:
        """Close the ledger's file (a later add reopens it)."""
        if self._f is not None:
            self._f.close()
            self._f = None

    def totals(self) -> dict[str, int]:
        """Requests and tokens over every run into this folder (a torn last line skipped)."""
        from sdg_data.io.sidecar import read_regular

        req = pt = ct = 0
        data = read_regular(self.path, cap=64 << 20)  # a regular file only (a link or FIFO counts nothing)
        for line in (data or b"").split(b"\n"):
            if len(line) < 5:  # blank, or too short to be a "[r,p,c]" line
                continue
            try:
                r, p, c = json.loads(line)
                r, p, c = int(r), int(p), int(c)
            except (ValueError, TypeError):
                continue
            req, pt, ct = req + r, pt + p, ct + c
        return {"requests": req, "prompt_tokens": pt, "completion_tokens": ct}
