"""SDG-Eval on a synthetic 1,151-image test set with the paper's composition, without embeddings.

    python bench/bench_eval.py

Times the whole `sdg eval` path (read both files, parse raw responses, match, score, write the report) and the
scoring alone, for Hungarian and greedy matching. Target: under 2 s without embeddings.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from synth import jittered, response, test_set  # noqa: E402

from sdg_data.io.files import write_jsonl, write_records  # noqa: E402
from sdg_data.scoring.evaluation import EvalConfig, evaluate, evaluate_files  # noqa: E402


def main() -> None:
    rng = random.Random(1)
    gt = test_set(1151)
    tmp = Path(tempfile.mkdtemp(prefix="sdg-bench-eval-"))
    write_records(tmp / "gt.jsonl", gt)
    preds = {r.image_id: jittered(rng, r.defects) for r in gt}
    write_jsonl(tmp / "pred.jsonl", ({"image_id": i, "response": response(rng, d)} for i, d in preds.items()))
    boxes = sum(len(r.defects) for r in gt)
    size = (tmp / "pred.jsonl").stat().st_size / 1e6
    print(f"test set: {len(gt)} images, {boxes} ground-truth boxes; predictions {size:.1f} MB of raw responses")
    for match in ("hungarian", "greedy"):
        cfg = EvalConfig(embedder="none", match=match)
        t0 = time.perf_counter()
        report = evaluate_files(tmp / "gt.jsonl", tmp / "pred.jsonl", tmp / "report.json", cfg)
        t_files = time.perf_counter() - t0
        t0 = time.perf_counter()
        evaluate(gt, preds, cfg)
        t_score = time.perf_counter() - t0
        art = report["artifact"]
        print(
            f"{match:9s}: end to end {t_files:.3f} s (target < 2 s), scoring alone {t_score:.3f} s; "
            f"artifact BoxF1@0.5 {art['BoxF1@0.5']:.3f}"
        )
    json.dumps(report)


if __name__ == "__main__":
    main()
