"""sdg build at real image size: 1024 x 1024 PNGs with content-like entropy (smooth structure plus sensor-like
noise, ~2 MB each), against plainly copying the same bytes, in the same run.

    python bench/bench_build_real.py [--images 300]        # --images 2000: ~4 GB, the "few thousand" case

Figures:
- build time over copy time, two copy baselines: ``shutil.copyfile`` (zero-copy in the kernel) and read + write
  through Python (what any tool that puts bytes into a file format must at least do);
- the build cold (no image verified before: every PNG fully decoded) and warm (the images verified by an earlier
  stage, as after ``sdg distill``: the verification cache skips the decode);
- peak memory (max RSS of the build's process) at half and at all the images: bounded means about equal;
- the folder's size over (each image once + text) with all four configs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def _image(args: tuple[int, str]) -> int:
    import numpy as np
    from PIL import Image

    i, folder = args
    rng = np.random.default_rng(i)
    low = Image.fromarray((rng.random((16, 16, 3)) * 255).astype("uint8")).resize((1024, 1024), Image.BICUBIC)
    pixels = np.asarray(low).astype(np.int16) + rng.integers(-12, 13, (1024, 1024, 3))
    path = Path(folder) / f"{i}.png"
    Image.fromarray(np.clip(pixels, 0, 255).astype("uint8")).save(path, compress_level=6)
    return path.stat().st_size


def setup(root: Path, n: int) -> int:
    from synth import test_set

    from distill.prompting import facts
    from distill.template_teacher import think_text
    from sdg_data.jsonl import write_records

    (root / "img").mkdir(parents=True)
    with Pool(os.cpu_count() or 2) as pool:
        total = sum(pool.map(_image, [(i, str(root / "img")) for i in range(n)]))
    recs = test_set(n, seed=1)
    for i, r in enumerate(recs):
        r.image_path, r.width, r.height = f"img/{i}.png", 1024, 1024
        r.caption, r.split = f"synthetic prompt {i // 4}", None
        r.think = think_text(r.caption, facts(r))
    write_records(root / "distilled.jsonl", recs)
    write_records(root / "half.jsonl", recs[: n // 2])
    return total


def copy_times(root: Path) -> tuple[float, float]:
    files = sorted((root / "img").glob("*.png"))
    for dst in ("copy1", "copy2"):
        shutil.rmtree(root / dst, ignore_errors=True)
        (root / dst).mkdir()
    t0 = time.perf_counter()
    for f in files:
        shutil.copyfile(f, root / "copy1" / f.name)
    t1 = time.perf_counter()
    for f in files:
        (root / "copy2" / f.name).write_bytes(f.read_bytes())
    return t1 - t0, time.perf_counter() - t1


_CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from sdg_data.build import BuildConfig, build_dataset
t0 = time.perf_counter()
s = build_dataset(sys.argv[1], sys.argv[2], BuildConfig(), progress=False)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": time.perf_counter() - t0, "rss_mb": rss, "size_ratio": s["size_ratio"],
                  "total_bytes": s["total_bytes"], "built": s["built"]}}))
"""


def build(records: Path, out: Path, cache: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "SDG_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    code = _CHILD.format(root=str(ROOT))
    res = subprocess.run([sys.executable, "-c", code, str(records), str(out)], env=env, capture_output=True,
                         text=True, check=True)  # fmt: skip
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=300)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-build-real-") as d:
        root = Path(d)
        t0 = time.perf_counter()
        total = setup(root, a.images)
        print(f"setup: {a.images} PNGs of 1024x1024, {total / 1e6:.0f} MB, in {time.perf_counter() - t0:.0f} s")
        copyfile_s, readwrite_s = copy_times(root)
        cold = build(root / "distilled.jsonl", root / "ds", root / "cache")
        warm = build(root / "distilled.jsonl", root / "ds", root / "cache")
        half = build(root / "half.jsonl", root / "ds_half", root / "cache")
        print(f"copy: shutil.copyfile {copyfile_s:.2f} s, read + write {readwrite_s:.2f} s")
        for name, r in (("cold (every PNG decoded)", cold), ("warm (verified before)", warm)):
            print(f"build {name}: {r['seconds']:.2f} s = {r['seconds'] / copyfile_s:.2f} x copyfile, "
                  f"{r['seconds'] / readwrite_s:.2f} x read + write (target <= 1.5 x)")  # fmt: skip
        print(f"peak RSS: {half['rss_mb']:.0f} MB at {half['built']} images, {warm['rss_mb']:.0f} MB at "
              f"{warm['built']} (bounded: about equal)")  # fmt: skip
        alone = cold["total_bytes"] / total
        print(f"size: {cold['total_bytes'] / 1e6:.0f} MB for all four configs = {cold['size_ratio']:.3f} x (each "
              f"image once + text); {alone:.3f} x the image bytes alone (target <= 1.1 x)")  # fmt: skip


if __name__ == "__main__":
    main()
