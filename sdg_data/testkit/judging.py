"""A judging export as Label Studio writes it, made offline from two refine manifests: the demo's stand-in for two
annotators judging blind pairs (they prefer method A's image in a fixed share of pairs, from a seed).

    python -m sdg_data.testkit.judging A/refined.jsonl B/refined.jsonl OUT.json [--prefer-a 0.6]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path


CHOICES = ("Left is better", "About the same", "Right is better")


def simulated_export(a: Path, b: Path, out: Path, prefer_a: float = 0.6, seed: int = 0) -> int:
    rows_a = {json.loads(x)["provenance"]["source_image_id"]: json.loads(x) for x in a.read_text().splitlines()}
    rows_b = {json.loads(x)["provenance"]["source_image_id"]: json.loads(x) for x in b.read_text().splitlines()}
    tasks = []
    for n, (key, ra) in enumerate(sorted(rows_a.items()), 1):
        rb = rows_b.get(key)
        if rb is None:
            continue
        pid = hashlib.sha256(f"{ra['image_id']}|{rb['image_id']}".encode()).hexdigest()[:16]
        rng = random.Random(f"{seed}:{pid}")
        order = "ab" if rng.random() < 0.5 else "ba"
        anns = []
        for who in (1, 2):
            r = rng.random()
            a_better = r < prefer_a
            same = not a_better and r < prefer_a + (1 - prefer_a) / 2
            choice = CHOICES[1] if same else CHOICES[0 if a_better == (order == "ab") else 2]
            anns.append({"id": 10 * n + who, "completed_by": who, "was_cancelled": False,
                         "result": [{"from_name": "verdict", "to_name": "left", "type": "choices",
                                     "value": {"choices": [choice]}}]})  # fmt: skip
        meta = {"judge": "sdg-judge/1", "order": order, "a_method": ra["provenance"]["mode"],
                "b_method": rb["provenance"]["mode"], "a_image_id": ra["image_id"], "b_image_id": rb["image_id"],
                "source_image_id": key}  # fmt: skip
        tasks.append({"id": n, "data": {"pair_id": pid, "caption": ra.get("caption", "")}, "meta": meta,
                      "annotations": anns})  # fmt: skip
    out.write_text(json.dumps(tasks), encoding="utf-8")
    return len(tasks)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--prefer-a", type=float, default=0.6)
    args = ap.parse_args()
    print(simulated_export(args.a, args.b, args.out, args.prefer_a), "pairs")
