"""Time and peak memory of ``sdg eval`` (with and without AP) and ``sdg reward`` at SDG scale with embeddings.

    python bench/bench_memory.py [--images 100000]

Each command runs in its own process on a synthetic set (the paper's composition, jittered predictions as raw
model responses), once with ``--embedder lexical`` and once with ``--embedder none`` (the baseline: everything but
the embeddings); the figures are the processes' wall time and peak resident memory and their ratios. ``sdg eval``
runs a third time with COCO AP from faster-coco-eval itself (``--ap-backend faster-coco-eval``): the default's
speed-up over the maintained evaluator, and whether the two reports' COCO figures agree. Targets at
100K images with ``lexical``: under 10 s and <= 1 GB. Also checks that chunked pair cosines equal the one-shot
computation exactly.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from synth import jittered, response, test_set  # noqa: E402

from sdg_data.io.files import write_jsonl, write_records  # noqa: E402
from sdg_data.scoring.embedding import CachedEmbedder, LexicalEmbedder  # noqa: E402


SDG = str(Path(sys.executable).parent / "sdg")


def peak_mb(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd`` alone in a child (a fresh one per measure, so the peaks do not mix); (peak MB, seconds)."""
    probe = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "sys.stderr.write(r.stderr[-2000:] if r.returncode else ''); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); sys.exit(r.returncode)"
    )
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{res.stderr}")
    return float(res.stdout.strip()), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=100_000)
    args = ap.parse_args()
    rng = random.Random(1)
    tmp = Path(tempfile.mkdtemp(prefix="sdg-bench-mem-"))
    gt = test_set(args.images, seed=3)
    write_records(tmp / "gt.jsonl", gt)
    write_jsonl(
        tmp / "pred.jsonl", ({"image_id": r.image_id, "response": response(rng, jittered(rng, r.defects))} for r in gt)
    )
    boxes = sum(len(r.defects) for r in gt)
    print(f"set: {len(gt)} images, {boxes} ground-truth boxes")

    # chunked cosines == one shot, bit for bit
    a = [d.description for r in gt[:4000] for d in r.defects]
    b = list(reversed(a))
    one = CachedEmbedder(LexicalEmbedder()).pair_cosines(a, b, chunk=len(a) or 1)
    chunked = CachedEmbedder(LexicalEmbedder(), max_bytes=1 << 20).pair_cosines(a, b, chunk=333)
    print(f"chunked pair cosines equal the one-shot ones: {bool((one == chunked).all())} ({len(a)} pairs)")

    for name, cmd in (
        ("eval", [SDG, "eval", "--gt", str(tmp / "gt.jsonl"), "--pred", str(tmp / "pred.jsonl"),
                  "--out", str(tmp / "report.json")]),
        ("eval --no-ap", [SDG, "eval", "--gt", str(tmp / "gt.jsonl"), "--pred", str(tmp / "pred.jsonl"),
                          "--out", str(tmp / "report-no-ap.json"), "--no-ap"]),
        ("reward", [SDG, "reward", "--gt", str(tmp / "gt.jsonl"), "--pred", str(tmp / "pred.jsonl"),
                    "--out", str(tmp / "rewards.jsonl")]),
    ):  # fmt: skip
        base, t_base = peak_mb([*cmd, "--embedder", "none"])
        lex, t_lex = peak_mb([*cmd, "--embedder", "lexical"])
        full = args.images >= 100_000
        print(
            f"{name:12s}: lexical embeddings {t_lex:5.1f} s, peak {lex:,.0f} MB; without embeddings {t_base:5.1f} s, "
            f"{base:,.0f} MB; ratio {t_lex / t_base:.2f}x time, {lex / base:.2f}x memory; targets at 100K images "
            f"(< 10 s, <= 1,024 MB): {'met' if t_lex < 10 and lex <= 1024 or not full else 'NOT met'}"
        )
        if name == "eval":  # COCO AP from the maintained evaluator itself, for scale (the figures are the same)
            ref = [*cmd[:-1], str(tmp / "report-faster.json"), "--ap-backend", "faster-coco-eval"]
            peak, t_ref = peak_mb([*ref, "--embedder", "lexical"])
            print(f"{'':12s}  the same with --ap-backend faster-coco-eval: {t_ref:5.1f} s, peak {peak:,.0f} MB "
                  f"({t_ref / t_lex:.1f}x the default's time, {peak / lex:.2f}x its memory); "
                  f"same COCO figures: {_same_coco(tmp / 'report.json', tmp / 'report-faster.json')}")  # fmt: skip


def _same_coco(a: Path, b: Path) -> str:
    """Whether two reports' COCO AP blocks agree (faster-coco-eval rounds its precision 1 ulp apart at times)."""
    import json

    def flat(block) -> list:
        return [x for v in block.values() for x in flat(v)] if isinstance(block, dict) else [block]

    x, y = (
        [v for k in ("coco", "coco_by_generator") for v in flat(json.loads(p.read_text())["ap"][k])] for p in (a, b)
    )
    if len(x) != len(y) or any((u is None) != (v is None) for u, v in zip(x, y, strict=True)):
        return "NO (different blocks)"
    worst = max((abs(u - v) for u, v in zip(x, y, strict=True) if u is not None), default=0.0)
    return f"{'yes' if worst <= 1e-12 else 'NO'} (largest difference {worst:.1e})"


if __name__ == "__main__":
    main()
