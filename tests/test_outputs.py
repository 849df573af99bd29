"""Outputs never touch inputs, what is stored is what was checked, a failed run harms nothing: one test per class of
the third hardening round (issue 24), each against the one mechanism that holds the class."""

from __future__ import annotations

import io
import json
import os
import random
import time
from pathlib import Path

import pytest
from PIL import Image

from sdg_data.io.files import AppendSink, OutputError, write_bytes


def _noise_png(w: int, h: int, seed: int) -> bytes:
    buf = io.BytesIO()
    Image.frombytes("RGB", (w, h), random.Random(seed).randbytes(w * h * 3)).save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------ 1. an output never lands on an input or a link
def test_coco_copies_into_the_source_folder_never_replace_a_source_image(tmp_path):
    """Ids that cross file names (record a's file is b.png and b's is a.png), --copy-images at the source folder:
    the copy that would replace the other record's source is refused, with the reason; no source changes."""
    from sdg_data.interop.coco import export_coco

    images = tmp_path / "images"
    images.mkdir()
    a, b = _noise_png(40, 30, 1), _noise_png(40, 30, 2)
    (images / "b.png").write_bytes(a)
    (images / "a.png").write_bytes(b)
    recs = [
        {"image_id": "a", "image_path": "images/b.png", "caption": "x", "defects": []},
        {"image_id": "b", "image_path": "images/a.png", "caption": "y", "defects": []},
    ]
    src = tmp_path / "r.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = export_coco(src, tmp_path / "coco.json", copy_images=images, image_roots=[tmp_path])
    assert (images / "b.png").read_bytes() == a and (images / "a.png").read_bytes() == b
    assert s["kept"] == 0 and s["rejected"] == 2
    reasons = [json.loads(x)["reason"] for x in (tmp_path / "coco.export.rejects.jsonl").read_text().splitlines()]
    assert all("one of this run's inputs" in r for r in reasons)
    with pytest.raises(OutputError, match="inputs"):  # nor does the JSON replace the records it read
        export_coco(src, src, image_roots=[tmp_path])


def test_coco_stores_the_bytes_it_checked_not_the_path_read_again(tmp_path, monkeypatch):
    """The file is swapped for another right after its check: the copy holds the checked bytes."""
    from sdg_data.interop.coco import export_coco
    from sdg_data.io import images as images_mod

    (tmp_path / "i").mkdir()
    good = _noise_png(40, 30, 3)
    (tmp_path / "i" / "x.png").write_bytes(good)
    src = tmp_path / "r.jsonl"
    src.write_text(json.dumps({"image_id": "x", "image_path": "i/x.png", "caption": "c", "defects": []}) + "\n")
    real = images_mod.read_verified

    def read_then_swap(path, *a, **kw):
        got = real(path, *a, **kw)
        Path(path).write_bytes(b"not an image at all, swapped in after the check")
        return got

    monkeypatch.setattr(images_mod, "read_verified", read_then_swap)
    export_coco(src, tmp_path / "o" / "c.json", copy_images=tmp_path / "o" / "img", image_roots=[tmp_path])
    assert (tmp_path / "o" / "img" / "x.png").read_bytes() == good


def test_writers_replace_a_planted_link_and_appenders_refuse_one(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").symlink_to(victim)
    write_bytes(out / "a.png", b"new")  # the link is replaced, the file behind it untouched
    assert not (out / "a.png").is_symlink() and victim.read_text() == "precious\n"
    (out / "rows.jsonl").symlink_to(victim)  # a resumed run's sink: trimming or appending would change the victim
    with pytest.raises(OutputError, match="symbolic link"):
        AppendSink(out / "rows.jsonl")
    assert victim.read_text() == "precious\n"


def test_restore_treats_a_dangling_link_as_existing(tmp_path):
    import sqlite3

    from annotation.postgres import PostgresError, restore

    dump = tmp_path / "ls.sqlite3"
    sqlite3.connect(dump).close()
    data = tmp_path / "data"
    data.mkdir()
    (data / "label_studio.sqlite3").symlink_to(tmp_path / "nowhere" / "db")
    with pytest.raises(PostgresError, match="exists"):
        restore("sqlite", data, dump)
    assert not (tmp_path / "nowhere").exists()


# ------------------------------------------------------------------ 2. what is stored is what was checked
def test_a_rewrite_that_puts_the_old_mtime_back_is_checked_again(tmp_path, monkeypatch):
    from sdg_data.io import images

    monkeypatch.setattr(images, "VERIFIED", images._VerifiedCache())
    f = tmp_path / "a.png"
    data = _noise_png(200, 160, 4)
    assert len(data) > images.SMALL_IMAGE
    f.write_bytes(data)
    old = time.time() - 10
    os.utime(f, (old, old))
    images.read_verified(f, (200, 160))
    images.read_verified(f, (200, 160))  # remembered by its stat
    st = f.stat()
    bad = bytearray(data)
    bad[-20] ^= 0xFF  # same size, and the mtime set back: only the ctime (kernel-set) tells
    time.sleep(0.01)
    f.write_bytes(bytes(bad))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_mtime_ns == st.st_mtime_ns and f.stat().st_size == st.st_size
    with pytest.raises(images.ImageError):
        images.read_verified(f, (200, 160))


# ------------------------------------------------------------------ 5. a failed run leaves the good output intact
def test_a_failed_rebuild_keeps_the_good_dataset_readable(tmp_path):
    from sdg_data.dataset.build import BuildConfig, build_dataset
    from sdg_data.dataset.stats import dataset_stats
    from sdg_data.io.files import write_records
    from sdg_data.io.jsonl import read_records
    from sdg_data.io.report import FAILED_RUN

    demo = Path(__file__).resolve().parents[1] / "sdg_data" / "demo" / "sample"
    recs = read_records(demo / "records.jsonl")[:4]
    for r in recs:
        r.image_path = str(demo / r.image_path)
        r.think = "### Step 1: a\n### Step 2: b\n### Step 3: c"
    write_records(tmp_path / "good.jsonl", recs)
    cfg = BuildConfig(image_roots=[str(demo)], test_fraction=0.0)
    build_dataset(tmp_path / "good.jsonl", tmp_path / "ds", cfg, progress=False)
    meta = tmp_path / "ds" / "meta"
    before = {p.name: p.read_bytes() for p in meta.glob("*.json*")}
    for r in recs:
        r.image_path = "nowhere.png"
    write_records(tmp_path / "bad.jsonl", recs)
    with pytest.raises(ValueError, match="built 0 of 4"):
        build_dataset(tmp_path / "bad.jsonl", tmp_path / "ds", cfg, progress=False)
    assert {p.name: p.read_bytes() for p in meta.glob("*.json*")} == before
    assert (meta / FAILED_RUN / "build.rejects.jsonl").exists()
    assert dataset_stats(tmp_path / "ds")["images"] == 4  # still readable by the next command


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command", ["distill", "import coco", "import-sdg30k", "refine", "pull --from-export"])
def test_a_run_that_keeps_nothing_leaves_the_last_good_outputs_as_they_were(tmp_path, command):
    """The rule for every command with outputs (build has its own test above): a good run, then a run whose every
    input is rejected into the same --out. The second exits non-zero, its reports go to failed-run/, and every file
    the good run wrote is byte for byte as it was; a later good run clears the failed run's reports."""
    import shutil
    import subprocess
    import sys

    demo = Path(__file__).resolve().parents[1] / "sdg_data" / "demo" / "sample"
    sdg = str(Path(sys.executable).parent / "sdg")
    work = tmp_path / "w"
    work.mkdir()
    shutil.copytree(demo / "images", work / "images")
    good_lines = (demo / "records.jsonl").read_text().splitlines()[:3]
    good, bad = work / "good.jsonl", work / "bad.jsonl"
    good.write_text("\n".join(good_lines) + "\n")
    bad.write_text("".join(json.dumps({**json.loads(x), "caption": 5}) + "\n" for x in good_lines))
    if command == "import coco":
        coco = {"images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}], "annotations": [],
                "categories": []}  # fmt: skip
        good.write_text(json.dumps(coco))
        bad.write_text(json.dumps({**coco, "images": [{"id": 1, "file_name": "a.png", "width": 0, "height": 10}]}))
    if command == "import-sdg30k":
        row = {
            "filepath": "images/flux/1.png",
            "caption": "a cat",
            "generator": "FLUX.2-dev",
            "ann_translated_bboxes": [],
        }
        good.write_text(json.dumps(row) + "\n")
        bad.write_text(json.dumps({**row, "filepath": 3}) + "\n")
    if command == "pull --from-export":
        task = {"id": 1, "data": {"image": "/data/local-files/?d=images/demo-00.png", "image_id": "demo-00",
                                  "caption": "c"},
                "annotations": [{"id": 5, "completed_by": 1, "result": []}]}  # fmt: skip
        good.write_text(json.dumps([task]))
        bad_ann = {"id": 5, "completed_by": 1, "result": [{"id": "r", "from_name": "nope", "value": {}}]}
        bad.write_text(json.dumps([{**task, "annotations": [bad_ann]}]))
    out = work / "out"
    args = {
        "distill": lambda src: ["distill", str(src), "--out", str(out)],
        "import coco": lambda src: ["import", "coco", str(src), "--out", str(out / "r.jsonl")],
        "import-sdg30k": lambda src: ["import-sdg30k", str(src), "--out", str(out / "r.jsonl")],
        "refine": lambda src: ["refine", str(src), "--out", str(out), "--backend", "dry-run"],
        "pull --from-export": lambda src: [
            "annotate",
            "pull",
            "--from-export",
            str(src),
            "--out",
            str(out / "r.jsonl"),
            "--image-root",
            str(work / "images"),
        ],  # fmt: skip
    }[command]
    out.mkdir()
    first = subprocess.run([sdg, *args(good)], capture_output=True, text=True, cwd=work)
    assert first.returncode == 0, first.stderr
    before = _snapshot(out)
    second = subprocess.run([sdg, *args(bad)], capture_output=True, text=True, cwd=work)
    assert second.returncode != 0 and "kept 0 of" in second.stderr and "Traceback" not in second.stderr, second
    after = _snapshot(out)
    assert {k: v for k, v in after.items() if not k.startswith("failed-run")} == before
    assert any(k.startswith("failed-run/") and k.endswith(".rejects.jsonl") for k in after), sorted(after)
    assert "failed-run" in second.stderr  # the error names where the rejects are
    third = subprocess.run([sdg, *args(good)], capture_output=True, text=True, cwd=work)
    assert third.returncode == 0 and not any(
        k.startswith("failed-run/") and k.endswith(".rejects.jsonl") for k in _snapshot(out)
    )


def test_every_writer_masks_keys_the_same_way(tmp_path, monkeypatch):
    """write_text, write_jsonl, write_json, an AppendSink and write_bytes all keep a configured key out of what they
    write (bytes: verbatim and base64, overwritten in place, so the file keeps its size)."""
    import base64

    from sdg_data.io.files import write_json, write_jsonl, write_text

    key = "sk-test-abcdefghijklmnop"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    write_text(tmp_path / "a.txt", f"key={key}")
    write_jsonl(tmp_path / "b.jsonl", [{"note": key}])
    write_json(tmp_path / "c.json", {"note": key})
    with AppendSink(tmp_path / "d.jsonl", fsync=False) as sink:
        sink.write({"note": key})
    blob = b"\x89PNG" + key.encode() + b"\x00" + base64.b64encode(b"Bearer " + key.encode()) + b"\xff"
    write_bytes(tmp_path / "e.bin", blob)
    for name in ("a.txt", "b.jsonl", "c.json", "d.jsonl", "e.bin"):
        data = (tmp_path / name).read_bytes()
        assert key.encode() not in data, name
        assert base64.b64encode(b"Bearer " + key.encode()) not in data, name
    assert len((tmp_path / "e.bin").read_bytes()) == len(blob)
    monkeypatch.delenv("OPENAI_API_KEY")
    write_bytes(tmp_path / "f.bin", blob)  # no key configured: the bytes as given
    assert (tmp_path / "f.bin").read_bytes() == blob
