"""Images are a trust boundary: every stage that opens one keeps to the allowed roots and verifies the file."""

import io
import json
import os
import struct
import time
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from sdg_data.cli import app
from sdg_data.dataset.build import BuildConfig, build_dataset
from sdg_data.io.images import ImageError, check_bytes
from sdg_data.io.paths import safe_filename


runner = CliRunner()
THINK = "### Step 1: a\n### Step 2: b\n### Step 3: c"


def _png(w: int, h: int, color="red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="PNG")
    return buf.getvalue()


def _bomb_header(w: int = 20000, h: int = 20000) -> bytes:
    """A PNG whose header declares w x h pixels (a few hundred bytes on disk)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


@pytest.fixture
def hostile(tmp_path):
    """A work folder with one good record and one record per way an image path or file can be bad."""
    work, outside = tmp_path / "work", tmp_path / "outside"
    (work / "img").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.png").write_bytes(_png(32, 32, "blue"))
    (work / "img" / "good.png").write_bytes(_png(32, 32))
    (work / "img" / "link.png").symlink_to(outside / "secret.png")
    (work / "img" / "text.png").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (work / "img" / "trunc.png").write_bytes(_png(64, 64)[:-60])
    (work / "img" / "bomb.png").write_bytes(_bomb_header())
    (work / "img" / "size.png").write_bytes(_png(40, 32))
    cases = {
        "good": ("img/good.png", None),
        "dotdot": ("../outside/secret.png", "outside the allowed image root"),
        "absolute": ("/etc/passwd", "outside the allowed image root"),
        "symlink": ("img/link.png", "outside the allowed image root"),
        "text": ("img/text.png", "not a PNG, JPEG, WEBP image"),
        "truncated": ("img/trunc.png", "does not decode"),
        "bomb": ("img/bomb.png", "67,108,864-pixel cap"),
        "size": ("img/size.png", "is 40x32 but the record says 32x32"),
    }
    recs = work / "records.jsonl"
    with recs.open("w") as f:
        for i, (name, (path, _)) in enumerate(cases.items()):
            rec = {
                "image_id": name,
                "image_path": path,
                "width": 32,
                "height": 32,
                "caption": f"prompt {i}",
                "generator": "g",
                "split": "train",
                "think": THINK,
                "defects": [{"box_2d": [100, 100, 500, 500], "label": "artifact", "description": "a melted paw"}],
            }
            f.write(json.dumps(rec) + "\n")
    return recs, {k: why for k, (_, why) in cases.items()}


def _reasons(rejects) -> dict[str, str]:
    return {r["image_id"]: r["reason"] for r in rejects}


def _check(rejects, cases, also_ok=()):
    got = _reasons(rejects)
    assert set(got) == {k for k, why in cases.items() if why} - set(also_ok), got
    for k, reason in got.items():
        assert cases[k] in reason and "\n" not in reason, (k, reason)


def test_check_bytes_classes():
    assert check_bytes(_png(8, 8)).width == 8
    for data, why in ((b"hello", "not a PNG"), (_bomb_header(), "pixel cap"), (_png(64, 64)[:-60], "does not decode")):
        with pytest.raises(ImageError, match=why):
            check_bytes(data)
    with pytest.raises(ImageError, match="record says 9x8"):
        check_bytes(_png(8, 8), (9, 8))


def test_build_stores_only_verified_images(hostile, tmp_path):
    recs, cases = hostile
    s = build_dataset(recs, tmp_path / "ds", BuildConfig(test_fraction=0.0), progress=False)
    assert (s["read"], s["built"], s["rejected"]) == (8, 1, 7)
    rejects = [json.loads(x) for x in (tmp_path / "ds" / "meta" / "build.rejects.jsonl").read_text().splitlines()]
    _check(rejects, cases)
    for shard in (tmp_path / "ds" / "data").rglob("*.parquet"):
        t = pq.read_table(shard)
        col = "image" if "image" in t.column_names else "images"
        for cell in t.column(col).to_pylist():
            cell = cell[0] if isinstance(cell, list) else cell
            assert check_bytes(cell["bytes"]).format == "PNG"
            assert b"root:" not in cell["bytes"]


def test_build_image_root_widens_what_is_allowed(hostile, tmp_path):
    recs, _ = hostile
    roots = [str(recs.parent), str(tmp_path / "outside")]
    s = build_dataset(recs, tmp_path / "ds", BuildConfig(test_fraction=0.0, image_roots=roots), progress=False)
    assert s["built"] == 3  # good, ../outside/secret.png and the symlink into outside/


def test_distill_rejects_each_bad_image_alone(hostile, tmp_path):
    recs, cases = hostile
    res = runner.invoke(app, ["distill", str(recs), "--out", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "d" / "distill.summary.json").read_text())
    assert (s["read"], s["distilled"], s["rejected"]) == (8, 1, 7)
    _check([json.loads(x) for x in (tmp_path / "d" / "distill.rejects.jsonl").read_text().splitlines()], cases)


def test_distill_api_rejects_bad_images_and_the_run_goes_on(hostile, tmp_path):
    from distill.config import DistillConfig
    from distill.fake_teacher import FakeTeacher, FakeTeacherServer
    from distill.runner import distill_file

    recs, cases = hostile
    with FakeTeacherServer(FakeTeacher()) as srv:
        cfg = DistillConfig(teacher="openai", base_url=srv.base_url, model="m", progress=False, timeout_s=10)
        s = distill_file(recs, tmp_path / "d", cfg)
        assert dict(srv.teacher.requests) == {"good": 1}  # nothing unverified is ever sent
    assert (s["distilled"], s["rejected"]) == (1, 7)
    _check([json.loads(x) for x in (tmp_path / "d" / "distill.rejects.jsonl").read_text().splitlines()], cases)


def test_viz_rejects_bad_images(hostile, tmp_path):
    recs, cases = hostile
    res = runner.invoke(app, ["viz", str(recs), "--out", str(tmp_path / "v")])
    assert res.exit_code == 0 and "drew 1 images" in res.output and "7 rejected" in res.output, res.output
    _check([json.loads(x) for x in (tmp_path / "v" / "viz.rejects.jsonl").read_text().splitlines()], cases)


def test_viz_names_files_from_ids_made_safe(tmp_path):
    (tmp_path / "img.png").write_bytes(_png(16, 16))
    out = tmp_path / "deep" / "out"
    ids = ["../../escape", "/tmp/abs-escape", "a/b", "a_b", "..", "ok-id_1.2"]
    recs = tmp_path / "r.jsonl"
    recs.write_text("".join(json.dumps({"image_id": i, "image_path": "img.png", "defects": []}) + "\n" for i in ids))
    res = runner.invoke(app, ["viz", str(recs), "--out", str(out)])
    assert res.exit_code == 0, res.output
    written = sorted(p.name for p in out.glob("*.png"))  # beside them: viz.summary.json, viz.rejects.jsonl
    assert len(written) == len(ids) and all(p.parent == out for p in out.iterdir())
    assert json.loads((out / "viz.summary.json").read_text())["kept"] == len(ids)
    assert "ok-id_1.2.png" in written and not (tmp_path / "escape.png").exists()
    assert not Path("/tmp/abs-escape.png").exists()
    assert len({safe_filename(i) for i in ids}) == len(ids)  # a/b and a_b never share a file


def test_detect_rejects_bad_images(hostile, tmp_path):
    from distill.fake_teacher import FakeTeacher, FakeTeacherServer
    from train.detector.detect import DetectConfig, detect

    recs, cases = hostile
    answer = '<think>x</think><answer>[{"box_2d": [1, 2, 30, 40], "label": "artifact", "description": "d"}]</answer>'
    with FakeTeacherServer(FakeTeacher(responder=lambda body, iid: answer)) as srv:
        cfg = DetectConfig(backend="openai", base_url=srv.base_url, model="m", progress=False, max_retries=0)
        s = detect(recs, tmp_path / "det", cfg)
    assert (s["read"], s["predicted"], s["rejected"]) == (8, 1, 7)
    _check([json.loads(x) for x in (tmp_path / "det" / "detect.rejects.jsonl").read_text().splitlines()], cases)


def test_detect_folder_refuses_symlinks_that_leave_it(tmp_path):
    from train.detector.detect import DetectConfig, read_inputs

    (tmp_path / "outside.png").write_bytes(_png(8, 8))
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "ok.png").write_bytes(_png(8, 8))
    (folder / "link.png").symlink_to(tmp_path / "outside.png")
    got = read_inputs(folder, DetectConfig(allow_missing_caption=True))
    assert [i.image_id for i in got.items] == ["ok"]
    assert "outside the allowed image root" in got.rejects[0].reason


def test_import_sdg30k_checks_images_under_the_root(tmp_path):
    root = tmp_path / "release"
    (root / "images").mkdir(parents=True)
    (root / "images" / "ok.png").write_bytes(_png(48, 32))
    (root / "images" / "bomb.png").write_bytes(_bomb_header())
    (tmp_path / "secret.png").write_bytes(_png(8, 8))
    item = [{"box_2d": [10, 10, 500, 500], "label": "artifact", "description": "a paw", "importance": 20}]
    rows = [
        {"filepath": p, "caption": "c", "generator": "g", "ann_translated_bboxes": item}
        for p in ("images/ok.png", "images/bomb.png", "../secret.png", "images/not-downloaded-yet.png")
    ]
    src = tmp_path / "test.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = runner.invoke(
        app, ["import-sdg30k", str(src), "--out", str(tmp_path / "o.jsonl"), "--image-root", str(root)]
    )
    assert res.exit_code == 0, res.output
    out = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [(r["width"], r["height"]) for r in out] == [(48, 32), (None, None)]
    rej = [json.loads(x)["reason"] for x in (tmp_path / "o.import.rejects.jsonl").read_text().splitlines()]
    assert "pixel cap" in rej[0] and "outside the allowed image root" in rej[1]


def test_verified_bytes_are_not_decoded_twice_and_changed_bytes_are(tmp_path, monkeypatch):
    from PIL import ImageFile

    from sdg_data.io import images

    monkeypatch.setenv("SDG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(images, "VERIFIED", images._VerifiedCache())
    decodes = []  # every check that the bytes decode: the PNG check or a full decode
    real_load, real_png = ImageFile.ImageFile.load, images.png.decodes
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: decodes.append(1) or real_load(im))
    monkeypatch.setattr(images.png, "decodes", lambda data: decodes.append(1) or real_png(data))
    import random

    noise = Image.frombytes("RGB", (200, 160), random.Random(0).randbytes(200 * 160 * 3))
    buf = io.BytesIO()
    noise.save(buf, format="PNG")
    assert len(buf.getvalue()) > images.SMALL_IMAGE  # small images are simply decoded every time
    f = tmp_path / "a.png"
    f.write_bytes(buf.getvalue())
    hashes = []
    real_sha = images.hashlib.sha256
    monkeypatch.setattr(images.hashlib, "sha256", lambda data=b"", **kw: hashes.append(1) or real_sha(data, **kw))
    images.read_verified(f, (200, 160))
    images.read_verified(f, (200, 160))  # just written ("racily clean"): not remembered by its stat, so hashed
    assert len(decodes) == 1 and len(hashes) == 2  # ... but its bytes are known: not decoded again
    old = time.time() - 10
    os.utime(f, (old, old))  # written a while ago, as images usually are
    first = images.read_verified(f, (200, 160))
    assert len(decodes) == 1 and len(hashes) == 3 and first.digest
    again = images.read_verified(f, (200, 160))  # same file, unchanged: neither hashed nor decoded
    assert len(decodes) == 1 and len(hashes) == 3 and again.data == first.data and again.digest == first.digest
    assert images.check_bytes(f.read_bytes()).width == 200 and len(decodes) == 1  # same bytes elsewhere
    n = len(decodes)
    assert again.open().size == (200, 160)  # decoded on demand when a stage needs the pixels
    decodes[n:] = []
    data = bytearray(f.read_bytes())
    data[-20] ^= 0xFF  # one byte of the image data changes (the file's stat changes with it)
    f.write_bytes(bytes(data))
    with pytest.raises(images.ImageError):
        images.read_verified(f, (200, 160))
    with pytest.raises(images.ImageError, match="record says"):
        images.check_bytes(first.data, (200, 161))  # a known image still has to have the stated size
    monkeypatch.setenv("SDG_VERIFY_CACHE", "0")
    n = len(decodes)
    images.check_bytes(first.data)
    assert len(decodes) == n + 1  # the cache off: every check decodes


def test_build_after_distill_neither_decodes_nor_hashes_an_image_again(tmp_path, monkeypatch):
    """distill checks each image as a file, so the build after it finds every file unchanged by its stat: no decode
    and no SHA-256 of the bytes (the build's cost is then reading and writing them)."""
    from PIL import ImageFile

    from distill.config import DistillConfig
    from distill.runner import distill_file
    from sdg_data.dataset.build import BuildConfig, build_dataset
    from sdg_data.io import images
    from tests.conftest import noise_records

    monkeypatch.setenv("SDG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(images, "VERIFIED", images._VerifiedCache())
    records = noise_records(tmp_path, n=6, size=320)  # over SMALL_IMAGE: the cache applies
    old = time.time() - 10
    for f in (tmp_path / "img").iterdir():
        os.utime(f, (old, old))  # written a while ago, as images usually are (a fresh file is hashed each time)
    distill_file(records, tmp_path / "distill", DistillConfig(progress=False))
    work = []
    real_load, real_png, real_sha = ImageFile.ImageFile.load, images.png.decodes, images.hashlib.sha256
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: work.append("decode") or real_load(im))
    monkeypatch.setattr(images.png, "decodes", lambda data: work.append("png") or real_png(data))

    def sha256(data=b"", **kw):
        if len(data) >= images.SMALL_IMAGE:  # an image's bytes, not some other use of hashlib
            work.append("sha256")
        return real_sha(data, **kw)

    monkeypatch.setattr(images.hashlib, "sha256", sha256)
    s = build_dataset(
        tmp_path / "distill" / "distilled.jsonl", tmp_path / "ds", BuildConfig(image_roots=[str(tmp_path)]), False
    )
    assert s["built"] == 6 and work == []
    os.utime(tmp_path / "img" / "2.png", (old + 1, old + 1))  # a changed stat: hashed again (its bytes are known)
    build_dataset(
        tmp_path / "distill" / "distilled.jsonl", tmp_path / "ds2", BuildConfig(image_roots=[str(tmp_path)]), False
    )
    assert work == ["sha256"]


def test_viz_that_draws_nothing_exits_non_zero(tmp_path):
    recs = tmp_path / "r.jsonl"
    recs.write_text("".join(json.dumps({"image_id": f"x{k}", "image_path": f"gone{k}.png", "defects": []}) + "\n"
                            for k in range(3)))  # fmt: skip
    res = runner.invoke(app, ["viz", str(recs), "--out", str(tmp_path / "v")])
    assert res.exit_code != 0 and "kept 0 of 3" in res.output and "does not exist" in res.output, res.output
    summary = json.loads((tmp_path / "v" / "viz.summary.json").read_text())
    assert (summary["read"], summary["kept"], summary["rejected"]) == (3, 0, 3)
