"""How far COCO AP moves when only the ground truth's record order changes.

    python bench/bench_ap_order.py [--draws 200]

Importances are integers 1-100, so predictions often tie on their score. pycocotools (and our columns, which
follow it) break a tie between two images' detections by the images' order in the ground truth, so a reordered
ground-truth file can move AP without any box changing. This prints, for the bundled demo (8 images) and for a
synthetic 1,151-image test set with the paper's composition, the spread of every COCO AP figure over random
orders of the ground-truth records (the first row is the file's own order). SDG-Eval's metrics are sums over
images and do not move (checked here too).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from synth import jittered, test_set  # noqa: E402

from sdg_data.io.jsonl import iter_jsonl, read_records  # noqa: E402
from sdg_data.scoring.ap import coco_ap  # noqa: E402
from sdg_data.scoring.evaluation import EvalConfig, evaluate, index_predictions  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]
KEYS = ("AP", "AP50", "AP75")


def spread(name: str, gt, preds, draws: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    base = coco_ap(gt, preds)
    table = evaluate(gt, preds, EvalConfig(embedder="none"))
    seen: dict[str, list[float]] = {}
    order = list(gt)
    ties = sum(len(ds) for ds in preds.values())
    for _ in range(draws):
        rng.shuffle(order)
        got = coco_ap(order, preds)
        for block in ("overall", "artifact", "misalignment"):
            for k in KEYS:
                if got[block][k] is not None:
                    seen.setdefault(f"{block}/{k}", []).append(got[block][k])
        again = evaluate(order, preds, EvalConfig(embedder="none"))
        for lab in ("artifact", "misalignment"):  # the same sums, added in another order (float rounding only)
            for m, v in table[lab].items():
                assert v is None if again[lab][m] is None else abs(again[lab][m] - v) < 1e-12, f"SDG-Eval {m} moved"
    print(f"{name}: {len(gt)} images, {ties} predictions; {draws} random orders of the ground-truth records")
    print(f"  {'figure':<24}{'file order':>11}{'min':>9}{'max':>9}{'max - min':>11}")
    for key, vals in seen.items():
        block, k = key.split("/")
        print(f"  {key:<24}{base[block][k]:>11.4f}{min(vals):>9.4f}{max(vals):>9.4f}{max(vals) - min(vals):>11.4f}")
    print("  SDG-Eval: the same under every order (to 1e-12: float sums in another order)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=200)
    args = ap.parse_args()
    demo = ROOT / "sdg_data" / "demo"
    gt = read_records(demo / "gt.jsonl")
    preds, _ = index_predictions(iter_jsonl(demo / "pred.jsonl"), EvalConfig())
    spread("bundled demo (sdg_data/demo/gt.jsonl, pred.jsonl)", gt, preds, args.draws)
    rng = random.Random(1)
    big = test_set(1151)
    preds = {r.image_id: jittered(rng, r.defects) for r in big}
    spread("synthetic test set (bench/synth.py)", big, preds, max(20, args.draws // 10))


if __name__ == "__main__":
    main()
