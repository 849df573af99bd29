"""Ground truth as every score reads it: a records file, a parquet shard, or one named split of a dataset folder,
with what it is (path, kind, split, fingerprint, images), so a score always says what it was computed on.

Only annotated records are ground truth: a record nobody has annotated (``"defects": null``) is not a clean image,
and scoring a prediction against it would reward or punish the detector for an answer nobody knows. Such records
are set aside as rejects with the reason, and the counts say how many.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdg_data.boxes import BoxOrder
from sdg_data.io.sidecar import file_digest
from sdg_data.records import ImageRecord, Reject


NOT_ANNOTATED = "defects: not annotated yet (null), so not ground truth: annotate it, or write [] if it is clean"
NOT_ANNOTATED_OLD = (
    'defects: not annotated yet ([] with provenance "annotated": false, the schema 1.1 form), so not ground truth'
)


@dataclass
class GroundTruth:
    """The annotated records a score uses, the records set aside (with why), and what they were read from."""

    records: list[ImageRecord]
    rejects: list[Reject] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)


def fingerprint(path: Path, kind: str) -> str:
    """What two scores must share to be compared: a dataset's build fingerprint (``build:<hex>``, which covers
    every record and image of that build; the shards' digests for a folder without one), or a file's digest."""
    if kind != "dataset":
        return file_digest(path)
    from sdg_data.io.arrow import build_summary, dataset_shards

    fp = (build_summary(path) or {}).get("fingerprint")
    if isinstance(fp, str) and fp:
        return f"build:{fp}"
    h = hashlib.sha256()
    for shard in dataset_shards(path, "annotations"):
        h.update(file_digest(shard).encode())
    return f"shards:{h.hexdigest()}"


def load_ground_truth(
    path: str | Path, split: str | None = None, stage: str = "eval", order: BoxOrder = "xyxy", unique: bool = True
) -> GroundTruth:
    """The annotated records of ``path`` and what they are. ``split``: for a dataset folder the split to read
    (default ``test``); for a records file or shard, None reads it whole and a split keeps the records whose own
    ``split`` field names it (``all``: every record). The not-annotated records become ``stage``'s rejects;
    ``source`` holds path, kind, split (None for a whole file), fingerprint, records read, images kept, not
    annotated, and the kept records' own ``split`` fields counted. Nothing annotated is an error."""
    import os

    from sdg_data.io.arrow import SPLIT_CHOICES, SplitError
    from sdg_data.io.jsonl import InputError, input_kind, load_records, read_records

    if split is not None and split not in SPLIT_CHOICES:
        raise InputError(f"--split {split!r}: choose one of {', '.join(SPLIT_CHOICES)}")
    p = Path(path)
    kind = input_kind(p)
    if kind == "images":
        raise InputError(f"{p}: a folder of images has no ground truth; give a records JSONL or an sdg build folder")
    if kind == "dataset":
        split = split or "test"
        records = load_records(p, order, split)
    else:
        records = read_records(p, order, unique=False) if kind == "jsonl" and not unique else load_records(p, order)
        if split not in (None, "all"):
            have = Counter(r.split or "unset" for r in records)
            records = [r for r in records if r.split == split]
            if not records:
                listed = ", ".join(f"{k} ({v})" for k, v in sorted(have.items())) or "none"
                named = "".join(f"--split {k} or " for k in sorted(have) if k != "unset")
                raise SplitError(f"{p}: no record has split {split!r} (its records' splits: {listed}); choose "
                                 f"{named}leave --split out to score the whole file")  # fmt: skip
    kept = [r for r in records if r.annotated]
    rejects = [
        Reject(NOT_ANNOTATED_OLD if r.old_form else NOT_ANNOTATED, stage, r.image_id, str(p), None, r.to_json())
        for r in records
        if not r.annotated
    ]
    source = {
        "path": os.path.abspath(p),
        "kind": kind,
        "split": split,
        "fingerprint": fingerprint(p, kind),
        "records_read": len(records),
        "images": len({r.image_id for r in kept}),
        "not_annotated": len(rejects),
        "record_splits": dict(sorted(Counter(r.split or "unset" for r in kept).items())),
    }
    if not kept:
        what = f"split {split!r} of {p}" if kind == "dataset" else str(p)
        why = f"all {len(records)} are not annotated yet" if records else "it holds no records"
        raise InputError(f"{what}: no annotated ground-truth records ({why}); nothing to score")
    return GroundTruth(kept, rejects, source)


def describe(source: dict[str, Any]) -> str:
    """One line for a table's heading: what was scored. ``ground truth: ds (dataset, split 'test', build
    1a2b3c4d5e6f), 240 images``; not-annotated records set aside are counted."""
    if not source:
        return "ground truth: not recorded"
    fp = str(source.get("fingerprint") or "")
    kind, _, hexpart = fp.partition(":")
    what = f"{source.get('kind')}, split {source['split']!r}" if source.get("split") else str(source.get("kind"))
    line = f"ground truth: {source.get('path')} ({what}, {kind} {hexpart[:12]}), {source.get('images')} images"
    if source.get("not_annotated"):
        line += f"; {source['not_annotated']} not annotated, left out"
    splits = source.get("record_splits") or {}
    if source.get("kind") != "dataset" and source.get("split") is None and len(splits) > 1:
        mix = ", ".join(f"{k} {v}" for k, v in splits.items())
        line += f"; its records' splits ({mix}) all scored: --split test keeps the held-out ones"
    return line
