"""Build 28,590 synthetic distilled records into all configs (85,770 SFT pairs) and compare the dataset size with
the unique image bytes plus text.

    python bench/bench_build.py [--records 28590] [--image-side 48]

Images are unique random-noise PNGs (incompressible, so the size check is honest); records follow the paper's
composition (synth.test_set); the think is the template teacher's.
"""

from __future__ import annotations

import io
import random
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from synth import bench_setup, test_set  # noqa: E402

from distill.prompting import facts  # noqa: E402
from distill.template_teacher import think_text  # noqa: E402
from sdg_data.dataset.build import BuildConfig, build_dataset  # noqa: E402
from sdg_data.io.files import write_records  # noqa: E402


def main() -> None:
    from PIL import Image

    args, root = bench_setup("bench-build-", records=28590, image_side=48)
    (root / "img").mkdir()
    rng = random.Random(0)
    t0 = time.perf_counter()
    recs = test_set(args.records, seed=1)
    side = args.image_side
    for i, r in enumerate(recs):
        buf = io.BytesIO()
        Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3)).save(buf, format="PNG", compress_level=1)
        (root / "img" / f"{i}.png").write_bytes(buf.getvalue())
        r.image_path, r.width, r.height = f"img/{i}.png", side, side
        r.caption = f"synthetic prompt {i // 4}"  # four images a prompt, like four generators
        r.split = None  # build assigns the prompt-disjoint split (paper proportion)
        r.think = think_text(r.caption, facts(r))
    write_records(root / "distilled.jsonl", recs)
    print(f"setup: {len(recs)} records with unique {side}x{side} PNGs in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    s = build_dataset(root / "distilled.jsonl", root / "ds", BuildConfig(), progress=False)
    dt = time.perf_counter() - t0
    print(f"build: {s['built']} records -> rows {s['rows']} in {dt:.1f} s (target < 60 s on 2 cores)")
    print(
        f"dataset {s['total_bytes'] / 1e6:.1f} MB for all four configs = {s['size_ratio']:.3f} x (each image once "
        f"{s['unique_image_bytes'] / 1e6:.1f} MB + text {s['text_bytes'] / 1e6:.1f} MB) (target <= 1.1x); "
        f"tables {', '.join(f'{k} {v / 1e6:.1f} MB' for k, v in s['bytes_by_table'].items())}"
    )
    print(
        f"= {s['total_bytes'] / s['unique_image_bytes']:.3f} x the unique image bytes alone (text compresses); one "
        "table per config (annotations, sft, grpo each with its images) measured 3.08 x here"
    )


if __name__ == "__main__":
    main()
