"""Synthetic SDG data with realistic counts (sdg-method.md section 1), shared by the benchmarks."""

from __future__ import annotations

import random
from pathlib import Path

from sdg_data.answer import render_response
from sdg_data.boxes import Box
from sdg_data.records import Defect, ImageRecord


GENERATORS = ("FLUX.2-dev", "Z-Image-Turbo", "LongCat-Image", "SANA-1.5-1.6B")
WORDS = (
    "left right hand finger fused extra missing blurred edge texture face eye ear leg arm wheel sign letters "
    "garbled color wrong red blue green shadow light reflection window chair table cup bowl dog cat child "
    "background foreground smeared melted duplicated twisted bent broken floating object caption asks shows"
).split()


def sentence(rng: random.Random, lo: int = 18, hi: int = 45) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."


def box(rng: random.Random) -> Box:
    w, h = rng.randint(30, 400), rng.randint(30, 400)
    x0, y0 = rng.randint(0, 1000 - w), rng.randint(0, 1000 - h)
    return Box(x0, y0, x0 + w, y0 + h)


def defects(rng: random.Random, n_art: int, n_mis: int) -> list[Defect]:
    out = [Defect(box(rng), "artifact", sentence(rng), rng.randint(15, 90)) for _ in range(n_art)]
    out += [Defect(box(rng), "misalignment", sentence(rng), rng.randint(15, 90)) for _ in range(n_mis)]
    return out


def test_set(n: int = 1151, seed: int = 0) -> list[ImageRecord]:
    """Composition 25.1% clean, 46.3% artifact-only, 5.4% misalignment-only, 23.2% both."""
    rng = random.Random(seed)
    recs = []
    for i in range(n):
        u = rng.random()
        kind = "clean" if u < 0.251 else "art" if u < 0.714 else "mis" if u < 0.768 else "both"
        n_art = rng.randint(1, 4) if kind in ("art", "both") else 0
        n_mis = rng.randint(1, 2) if kind in ("mis", "both") else 0
        recs.append(
            ImageRecord(
                f"img-{i:05d}",
                defects(rng, n_art, n_mis),
                generator=GENERATORS[i % 4],
                caption=sentence(rng, 5, 15),
                split="test",
                width=1024,
                height=1024,
            )
        )
    return recs


def jittered(rng: random.Random, ds: list[Defect]) -> list[Defect]:
    """A plausible detector answer: some boxes kept with offsets, some dropped, some invented."""
    out = []
    for d in ds:
        if rng.random() < 0.7:
            b = d.box
            j = [rng.randint(-40, 40) for _ in range(4)]
            nb = Box(b.x0 + j[0], b.y0 + j[1], b.x1 + j[2], b.y1 + j[3]).clamp()
            if nb.problem() is None:
                out.append(Defect(nb, d.label, sentence(rng), rng.randint(1, 100)))
    for _ in range(rng.choice((0, 0, 1))):
        out.append(Defect(box(rng), rng.choice(("artifact", "misalignment")), sentence(rng), rng.randint(1, 100)))
    return out


def response(rng: random.Random, ds: list[Defect], fail_rate: float = 0.05) -> str:
    text = render_response(sentence(rng, 60, 120), ds)
    if rng.random() < fail_rate:
        return text[: len(text) * 2 // 3]  # truncated generation
    return text


def bench_setup(prefix: str, **defaults: object):
    """Each bench's flags (one ``--name`` per default, its type from the default) and a fresh work folder."""
    import argparse
    import tempfile

    ap = argparse.ArgumentParser()
    for name, value in defaults.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    return ap.parse_args(), Path(tempfile.mkdtemp(prefix=prefix))
