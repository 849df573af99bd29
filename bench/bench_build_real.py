"""sdg build at real image size: 1024 x 1024 PNGs with content-like entropy (smooth structure plus sensor-like
noise, ~2 MB each), against plainly copying the same bytes, in the same run.

    python bench/bench_build_real.py [--images 300] [--from-disk]   # --images 2000: ~4 GB, the "few thousand" case

Baselines, each measured in the same run as the builds:
- ``shutil.copyfile``: zero-copy in the kernel;
- read + write through Python: what any tool that puts the bytes into a file format must at least do;
- a bare parquet write of the same bytes (pyarrow, one binary column, no checks, no other columns): what the format
  itself costs, the floor for any builder of parquet shards.

The build is timed cold (no image verified before: every PNG checked to decode) and warm (the images verified by an
earlier stage on this machine, as after ``sdg distill`` or ``sdg import-sdg30k``: the verification cache skips the
check and the hash).
Each figure is the best of ``--repeat`` interleaved runs (as timeit reports: a VM's I/O is noisy), each started
after ``sync``, and leaves out Python's start and the imports (printed apart: paid once per run). Two protocols:
- default, page cache: the images are in memory, the output is left to the kernel (no fsync). Measures the CPU.
- ``--from-disk`` (root only): every run starts with the page cache dropped and ends when its output is on disk
  (``sync`` inside the timing), as for a dataset larger than memory; every baseline gets the same protocol.
Also printed: peak memory (max RSS of the build's process) at half the records, all of them, and the records
listed again 4 and 8 times under new ids and prompts (the same files: many images without writing more; bounded
means it levels off), and the folder's size over (each image once + text) with all four configs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
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
    from sdg_data.io.files import write_records
    from sdg_data.records import ImageRecord

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
    for times in (4, 8):
        again = []
        for k in range(times):
            for r in recs:
                r2 = ImageRecord.from_json(r.to_json())
                r2.image_id, r2.caption = f"{r.image_id}-{k}", f"{r.caption} (copy {k})"
                again.append(r2)
        write_records(root / f"x{times}.jsonl", again)
    return total


def _settle(from_disk: bool) -> None:
    """Start a timed run from the same state: nothing waiting to be written; with ``from_disk``, nothing cached."""
    os.sync()
    if from_disk:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def copy_time(root: Path, how: str, from_disk: bool) -> float:
    """Seconds to copy every image into a fresh folder (``how``: copyfile or readwrite), or (``how`` = parquet) to
    write their bytes as one parquet column, batches of 32 images, no dictionary, no compression."""
    files = sorted((root / "img").glob("*.png"))
    dst = root / f"copy-{how}"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir()
    _settle(from_disk)
    t0 = time.perf_counter()
    if how == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        with pq.ParquetWriter(dst / "images.parquet", pa.schema([("bytes", pa.binary())]), compression="none",
                              use_dictionary=False, write_statistics=False) as writer:  # fmt: skip
            for i in range(0, len(files), 32):
                writer.write_table(pa.table({"bytes": pa.array([f.read_bytes() for f in files[i : i + 32]])}))
    else:
        for f in files:
            if how == "copyfile":
                shutil.copyfile(f, dst / f.name)
            else:
                (dst / f.name).write_bytes(f.read_bytes())
    if from_disk:
        os.sync()
    return time.perf_counter() - t0


_CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
sys.path[:0] = [{root!r}, {bench!r}]
from bench_build_real import _settle
from sdg_data.build import BuildConfig, _features, build_dataset
_features()  # imports datasets
t1 = time.perf_counter()
_settle({from_disk!r})
t2 = time.perf_counter()
s = build_dataset(sys.argv[1], sys.argv[2], BuildConfig(workers=int(sys.argv[3])), progress=False)
if {from_disk!r}:
    import os
    os.sync()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": time.perf_counter() - t2, "imports": t1 - t0, "rss_mb": rss,
                  "size_ratio": s["size_ratio"], "total_bytes": s["total_bytes"], "built": s["built"]}}))
"""


def build(records: Path, out: Path, cache: Path, from_disk: bool, workers: int = 0) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "SDG_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    code = _CHILD.format(root=str(ROOT), bench=str(ROOT / "bench"), from_disk=from_disk)
    res = subprocess.run([sys.executable, "-c", code, str(records), str(out), str(workers)], env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(res.stdout.strip().splitlines()[-1])


def _can_drop_caches() -> bool:
    try:
        _settle(True)
        return True
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5, help="runs of each timing (the best is shown)")
    ap.add_argument("--from-disk", action="store_true", help="drop the page cache before each run (root only)")
    a = ap.parse_args()
    if a.from_disk and not _can_drop_caches():
        print("--from-disk: the page cache cannot be dropped here (root only); not measured")
        return
    protocol = "from disk, output synced" if a.from_disk else "page cache"
    with tempfile.TemporaryDirectory(prefix="bench-build-real-") as d:
        root = Path(d)
        t0 = time.perf_counter()
        total = setup(root, a.images)
        print(f"setup: {a.images} PNGs of 1024x1024, {total / 1e6:.0f} MB, in {time.perf_counter() - t0:.0f} s")
        base = {"copyfile": [], "readwrite": [], "parquet": []}
        builds: dict[str, list[dict]] = {"cold": [], "warm": [], "cold1": []}
        for i in range(a.repeat):  # interleaved, so a slow spell of the machine hits every figure alike
            for how, times in base.items():
                times.append(copy_time(root, how, a.from_disk))
            builds["cold"].append(build(root / "distilled.jsonl", root / "ds", root / f"cache{i}", a.from_disk))
            builds["warm"].append(build(root / "distilled.jsonl", root / "ds", root / f"cache{i}", a.from_disk))
            builds["cold1"].append(build(root / "distilled.jsonl", root / "ds", root / f"one{i}", a.from_disk, 1))
        rss = [
            build(root / f"{name}.jsonl", root / "ds_rss", root / "cache-rss", False) for name in ("half", "x4", "x8")
        ]
        med = {k: min(v) for k, v in base.items()}
        print(f"protocol: {protocol}; best of {a.repeat} runs (each run's figure in brackets)")
        names = {"copyfile": "shutil.copyfile", "readwrite": "read + write", "parquet": "bare parquet write"}
        for k, v in base.items():
            print(f"  {names[k]}: {med[k]:.2f} s [{', '.join(f'{x:.2f}' for x in v)}]")
        for name, key in (("cold (every PNG checked)", "cold"), ("warm (verified before)", "warm")):
            each = [r["seconds"] for r in builds[key]]
            secs = min(each)
            print(f"  build {name}: {secs:.2f} s [{', '.join(f'{x:.2f}' for x in each)}] = "
                  f"{secs / med['readwrite']:.2f} x read + write (target <= 1.5 x), "
                  f"{secs / med['copyfile']:.2f} x copyfile, {secs / med['parquet']:.2f} x bare parquet")  # fmt: skip
        one = min(r["seconds"] for r in builds["cold1"])
        cores = os.cpu_count()
        print(
            f"  cold with one checking thread: {one:.2f} s; with one per core ({cores}): "
            f"{one / min(r['seconds'] for r in builds['cold']):.2f} x faster (the check scales with cores)"
        )
        imports = statistics.median(r["imports"] for r in builds["cold"])
        print(f"  once per run, not in the figures above: Python imports {imports:.2f} s")
        cold = builds["cold"][-1]
        runs = sorted([*rss, cold], key=lambda r: r["built"])
        print("peak RSS: " + ", ".join(f"{r['rss_mb']:.0f} MB at {r['built']} images" for r in runs)
              + " (bounded: levels off)")  # fmt: skip
        alone = cold["total_bytes"] / total
        print(f"size: {cold['total_bytes'] / 1e6:.0f} MB for all four configs = {cold['size_ratio']:.3f} x (each "
              f"image once + text); {alone:.3f} x the image bytes alone (target <= 1.1 x)")  # fmt: skip


if __name__ == "__main__":
    main()
