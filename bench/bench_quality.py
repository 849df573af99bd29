"""A lead's quality tools at team scale, each as a ratio to the plain pull of the same export, same run.

    python bench/bench_quality.py [--tasks 5000] [--gold 250] [--repeats 3]

A simulated team of three (annotation.simteam: good, fair, weak) annotates every task of a synthetic reference set
(0-3 boxes an image); ``--gold`` references are the gold store. On the JSON export a user downloads from the UI:
1. baseline: ``sdg annotate pull --from-export`` with the default policy (read, parse, convert, write);
2. status: ``sdg annotate status --from-export`` with every annotator's gold scores (SDG-Eval per annotator,
   1000 bootstrap draws, lexical description cosine);
3. consensus: the same pull with ``--consolidation consensus`` (clusters, medians, description medoids);
4. consensus weighted by the gold scores.
Medians of ``--repeats`` runs; the records each pull writes are counted so the work is the same.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import orjson  # noqa: E402
from synth import bench_setup  # noqa: E402

from annotation.config import AnnotateConfig  # noqa: E402
from annotation.pull import pull_from_export  # noqa: E402
from annotation.simteam import simulate_export  # noqa: E402
from annotation.status import status  # noqa: E402
from sdg_data.records import ImageRecord  # noqa: E402


WORDS = "left hand six fingers melted ear sign text garbled red blue car sofa window roof tree face eye".split()


def references(n: int, seed: int = 0) -> list[ImageRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        defects = []
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            x, y = rng.uniform(0, 700), rng.uniform(0, 700)
            w, h = rng.uniform(50, 300), rng.uniform(50, 300)
            defects.append({"box_2d": [round(x), round(y), round(min(1000, x + w)), round(min(1000, y + h))],
                            "label": rng.choice(["artifact", "misalignment"]), "importance": rng.randint(10, 90),
                            "description": " ".join(rng.sample(WORDS, 5))})  # fmt: skip
        out.append(ImageRecord.from_json({"image_id": f"b-{i:05d}", "caption": "a photo", "width": 1024,
                                          "height": 1024, "defects": defects}))  # fmt: skip
    return out


def _time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    args, root = bench_setup("bench-quality-", tasks=5000, gold=250, repeats=3)
    refs = references(args.tasks)
    step = max(1, args.tasks // max(1, args.gold))
    gold = refs[::step][: args.gold]
    export = root / "export.json"
    export.write_bytes(orjson.dumps(simulate_export(refs)))
    store = root / "gold.jsonl"
    store.write_bytes(b"".join(orjson.dumps(r.to_json()) + b"\n" for r in gold))
    base = {"gold_file": str(store), "embedder": "lexical", "image_root": str(root), "work_dir": str(root / "w")}
    plain = AnnotateConfig(**base)  # the default policy: the earliest annotation of each image
    with_gold = AnnotateConfig(**base, gold_bootstrap=1000, gold_min_tasks=10)
    consensus = AnnotateConfig(**base, consolidation="consensus")
    weighted = AnnotateConfig(**base, consolidation="consensus", consensus_weights=True)
    print(f"{args.tasks} tasks x 3 annotators ({3 * args.tasks} annotations), {len(gold)} gold; "
          f"export {export.stat().st_size / 1e6:.1f} MB; median of {args.repeats}")  # fmt: skip
    t_plain, s = _time(lambda: pull_from_export(export, root / "plain.jsonl", plain), args.repeats)
    print(f"  plain pull (earliest)        {t_plain:7.2f} s  {s['images']} images   1.00x  (baseline)")
    t, st = _time(lambda: status(None, with_gold, from_export=export), args.repeats)
    flagged = st["gold"]["flagged"]
    print(f"  status with gold scores      {t:7.2f} s  {st['gold']['annotations']} gold annotations  "
          f"{t / t_plain:5.2f}x  (flagged: {', '.join(flagged) or 'none'})")  # fmt: skip
    for name, cfg in (("consensus pull", consensus), ("consensus, gold-weighted", weighted)):
        t, s = _time(lambda cfg=cfg: pull_from_export(export, root / "c.jsonl", cfg), args.repeats)
        print(f"  {name:<28} {t:7.2f} s  {s['images']} images ({s['unresolved_images']} without a verdict), "
              f"{s['consensus_disagreements']} disagreements  {t / t_plain:5.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
