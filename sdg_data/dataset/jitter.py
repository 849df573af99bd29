"""Coordinate jitter: the SFT pairs of SDG-30K are 3 copies of each training image's response, the first with the
annotated boxes, the others with every grid coordinate moved by an independent integer in [-A, A] (A = 10).

Only the answer changes; the think is shared. Offsets are seeded by (seed, image id, epoch), so a pair can be
rebuilt alone, in any order, on any machine.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from sdg_data.answer import render_response
from sdg_data.records import Defect, ImageRecord


@dataclass(frozen=True, slots=True)
class JitterConfig:
    epochs: int = 3
    amplitude: int = 10
    seed: int = 42

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not 0 <= self.amplitude <= 100:
            raise ValueError(f"amplitude must be within 0-100 grid units, got {self.amplitude}")


def _rng(seed: int, image_id: str, epoch: int) -> np.random.Generator:
    digest = hashlib.blake2b(f"{seed}\x1f{image_id}\x1f{epoch}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def jitter_offsets(image_id: str, n_boxes: int, epoch: int, cfg: JitterConfig) -> list[list[int]]:
    """``n_boxes`` rows of (dx0, dy0, dx1, dy1); all zeros for epoch 0."""
    if epoch == 0 or cfg.amplitude == 0 or n_boxes == 0:
        return [[0, 0, 0, 0] for _ in range(n_boxes)]
    a = cfg.amplitude
    return _rng(cfg.seed, image_id, epoch).integers(-a, a + 1, size=(n_boxes, 4)).tolist()


def jittered_defects(record: ImageRecord, epoch: int, cfg: JitterConfig) -> tuple[list[Defect], list[list[int]]]:
    offsets = jitter_offsets(record.image_id, len(record.defects), epoch, cfg)
    moved = [
        Defect(d.box.shifted(off), d.label, d.description, d.importance, d.provenance)
        for d, off in zip(record.defects, offsets)
    ]
    return moved, offsets


def pair_responses(record: ImageRecord, cfg: JitterConfig) -> list[tuple[int, str, list[list[int]]]]:
    """``(epoch, response, offsets)`` for every epoch of one distilled record (it must carry its think)."""
    if record.think is None:
        raise ValueError(f"record {record.image_id!r} field 'think': missing (distill the record first)")
    out = []
    for epoch in range(cfg.epochs):
        defects, offsets = jittered_defects(record, epoch, cfg)
        out.append((epoch, render_response(record.think, defects), offsets))
    return out
