"""Distill throughput against the loopback teacher at 200 ms latency with 16 requests in flight.

    python bench/bench_distill.py [--records 400] [--latency 0.2] [--in-flight 16]

The bound is in_flight / latency requests per second (80/s by default); the target is at least 90% of it.
The server runs in its own process so its threads do not share our GIL.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from synth import bench_setup  # noqa: E402

from distill.config import DistillConfig  # noqa: E402
from distill.runner import distill_file  # noqa: E402


def make_records(root: Path, n: int) -> Path:
    from PIL import Image

    (root / "img").mkdir(parents=True)
    Image.new("RGB", (256, 256), (120, 160, 200)).save(root / "img" / "a.png")
    with (root / "in.jsonl").open("w") as f:
        for i in range(n):
            defects = [{"box_2d": [100 + i % 50, 100, 400, 400], "label": "artifact", "description": "extra finger"}]
            f.write(
                json.dumps(
                    {
                        "image_id": f"b{i:05d}",
                        "image_path": "img/a.png",
                        "width": 256,
                        "height": 256,
                        "caption": f"prompt {i}",
                        "defects": defects if i % 4 else [],
                    }
                )
                + "\n"
            )
    return root / "in.jsonl"


def main() -> None:
    args, root = bench_setup("bench-distill-", records=400, latency=0.2, in_flight=16)
    src = make_records(root, args.records)
    server = subprocess.Popen(
        [sys.executable, "-m", "distill.fake_teacher", "--latency", str(args.latency)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        url = server.stdout.readline().strip()
        import openai  # noqa: F401  a one-off second of imports per process, not the I/O end to end measures

        cfg = DistillConfig(
            teacher="openai", base_url=url, model="fake", max_in_flight=args.in_flight, progress=False, timeout_s=30
        )
        t0 = time.perf_counter()
        s = distill_file(src, root / "out", cfg)
        dt = time.perf_counter() - t0
    finally:
        server.terminate()
    bound = args.in_flight / args.latency
    rate = s["requests_per_s"]
    print(
        f"{s['requests']} requests, {s['distilled']} distilled, {s['rejected']} rejected; request phase "
        f"{s['seconds']:.2f} s, end to end {dt:.2f} s (reading inputs, cache checks, writing outputs)"
    )
    print(
        f"throughput: {rate:.1f} req/s; bound {bound:.1f} req/s ({args.in_flight} in flight / "
        f"{args.latency * 1000:.0f} ms) -> {rate / bound:.1%} of the bound (target >= 90%); "
        f"end to end {s['requests'] / dt / bound:.1%}"
    )


if __name__ == "__main__":
    main()
