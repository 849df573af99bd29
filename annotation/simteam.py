"""A simulated annotation team, for the demo, the tests and the benchmark: the Label Studio export that annotators of
known skill would leave on a set of reference records (each box moved by their hand's noise, some missed, some
invented), with a gold store drawn from the same references. What a lead's tools do with a real team's export can
then be checked against the truth the team never saw.

    python -m annotation.simteam REFERENCE.jsonl OUT_DIR [--gold N] [--seed S]

writes ``OUT_DIR/export.json`` (a JSON export, as the UI downloads it), ``OUT_DIR/gold.jsonl`` (N references, the
gold store) and ``OUT_DIR/reference.jsonl`` (the other references: what a pull of the export is scored against).
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from annotation.uiform import ui_region
from sdg_data.records import LABELS, ImageRecord


@dataclass(frozen=True)
class Skill:
    jitter: float  # standard deviation of each box edge, on the 0-1000 grid
    miss: float  # chance of not drawing a reference box
    extra: float  # chance of drawing one box that is not there
    importance_sd: float = 10.0


TEAM = {
    "ann-good@team.test": Skill(jitter=12, miss=0.1, extra=0.05),
    "ann-fair@team.test": Skill(jitter=30, miss=0.25, extra=0.15),
    "ann-weak@team.test": Skill(jitter=70, miss=0.45, extra=0.45),
}


def _edge(rng: random.Random, v: float, sd: float) -> float:
    return min(1000.0, max(0.0, v + rng.gauss(0, sd)))


def _region(rng: random.Random, k: int, label: str, box: tuple[float, ...], desc: str, imp: int, size) -> list:
    x0, y0, x1, y1 = box
    if x1 - x0 < 5:
        x1 = min(1000.0, x0 + 5)
        x0 = x1 - 5
    if y1 - y0 < 5:
        y1 = min(1000.0, y0 + 5)
        y0 = y1 - 5
    return ui_region(f"r{k}", label, x0 / 10, y0 / 10, (x1 - x0) / 10, (y1 - y0) / 10, desc, imp, *size)


def answer(rng: random.Random, ref: ImageRecord, skill: Skill) -> list[dict[str, Any]]:
    """What one annotator of ``skill`` draws on ``ref``'s image, in the editor's result form."""
    size = (ref.width or 512, ref.height or 512)
    out: list[dict[str, Any]] = []
    for k, d in enumerate(ref.defects):
        if rng.random() < skill.miss:
            continue
        box = tuple(_edge(rng, v, skill.jitter) for v in d.box)
        x0, y0, x1, y1 = box
        box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        words = (d.description or "something is wrong here").split()
        if len(words) > 3 and rng.random() < 0.5:  # said a little differently
            words.pop(rng.randrange(len(words)))
        imp = int(min(100, max(1, round(rng.gauss(d.importance or 50, skill.importance_sd)))))
        out += _region(rng, k, d.label, box, " ".join(words), imp, size)
    if rng.random() < skill.extra:
        x, y = rng.uniform(0, 800), rng.uniform(0, 800)
        w, h = rng.uniform(40, 200), rng.uniform(40, 200)
        box = (x, y, min(1000.0, x + w), min(1000.0, y + h))
        out += _region(rng, 99, rng.choice(LABELS), box, "something looks off here", rng.randint(5, 40), size)
    return out


def simulate_export(
    refs: list[ImageRecord], team: dict[str, Skill] | None = None, seed: int = 0
) -> list[dict[str, Any]]:
    """One task per reference, annotated by every member of ``team`` in a random order (so the earliest annotation
    comes from anyone)."""
    team = team or TEAM
    rng = random.Random(seed)
    start = datetime(2026, 12, 1, 9, tzinfo=timezone.utc)
    users = {who: k + 1 for k, who in enumerate(team)}
    tasks, aid = [], 0
    for t, ref in enumerate(refs):
        order = list(team)
        rng.shuffle(order)
        anns = []
        for k, who in enumerate(order):
            aid += 1
            when = (start + timedelta(minutes=t, seconds=k)).isoformat().replace("+00:00", "Z")
            anns.append({"id": aid, "completed_by": {"id": users[who], "email": who},
                         "result": answer(rng, ref, team[who]), "was_cancelled": False, "created_at": when,
                         "updated_at": when, "lead_time": round(rng.uniform(20, 90), 1)})  # fmt: skip
        data = {"image_id": ref.image_id, "caption": ref.caption or "", "generator": ref.generator or "",
                "seed": ref.seed if ref.seed is not None else "", "split": ref.split or ""}  # fmt: skip
        tasks.append({"id": t + 1, "data": data, "annotations": anns})
    return tasks


def main(argv: list[str] | None = None) -> int:
    from sdg_data.io.files import write_bytes
    from sdg_data.io.truth import load_ground_truth

    p = argparse.ArgumentParser(prog="python -m annotation.simteam", description=__doc__.split("\n\n")[0])
    p.add_argument("reference", type=Path, help="annotated records the simulated team draws from")
    p.add_argument("out", type=Path, help="folder for export.json and gold.jsonl")
    p.add_argument("--gold", type=int, default=4, help="references kept as gold (spread over those with boxes)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    refs = load_ground_truth(args.reference, stage="simteam").records
    tasks = simulate_export(refs, seed=args.seed)
    boxed = [r for r in refs if r.defects]  # a gold task with no box scores no box: spread over those with boxes
    step = max(1, len(boxed) // max(1, args.gold)) if args.gold else 0
    gold = boxed[step // 2 :: step][: args.gold] if step else []
    args.out.mkdir(parents=True, exist_ok=True)
    write_bytes(args.out / "export.json", orjson.dumps(tasks))
    write_bytes(args.out / "gold.jsonl", b"".join(orjson.dumps(r.to_json()) + b"\n" for r in gold))
    rest = [r for r in refs if r not in gold]
    write_bytes(args.out / "reference.jsonl", b"".join(orjson.dumps(r.to_json()) + b"\n" for r in rest))
    print(f"{len(tasks)} tasks x {len(TEAM)} annotators -> {args.out / 'export.json'}; {len(gold)} gold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
