"""RichHF-18K interop: TFRecords read without TensorFlow, heatmaps <-> boxes, the paper's image-level Table 3."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdg_data.boxes import Box, boxes_from_heatmap, heatmap_from_boxes
from sdg_data.interop.richhf import RichHFConfig, import_richhf
from sdg_data.records import Defect, ImageRecord
from sdg_data.scoring.image_level import image_level


SDG = str(Path(sys.executable).parent / "sdg")


def _png_map(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((arr * 255).round().astype("uint8")).save(buf, format="PNG")
    return buf.getvalue()


def test_heatmap_regions_become_boxes_and_back():
    heat = np.zeros((20, 40), np.float32)
    heat[2:6, 4:10] = 0.5
    heat[3, 5] = 0.95  # the peak sets the importance
    heat[6, 10] = 0.5  # touches the first region diagonally: 8-connected, one region
    heat[15:18, 30:36] = 0.4
    heat[10, 20] = 0.9  # a single marked pixel: below min_pixels
    boxes = boxes_from_heatmap(heat, 0.33, min_pixels=2)
    assert [b for b, _ in boxes] == [Box.from_pixels([4, 2, 11, 7], 40, 20), Box.from_pixels([30, 15, 36, 18], 40, 20)]
    assert [round(p, 2) for _, p in boxes] == [0.95, 0.4]
    assert len(boxes_from_heatmap(heat, 0.33, min_pixels=1)) == 3 and boxes_from_heatmap(heat, 0.96) == []
    back = heatmap_from_boxes([b for b, _ in boxes], [p for _, p in boxes], 20, 40)
    want = np.zeros((20, 40), np.float32)
    want[2:7, 4:11] = 0.95  # the first region's bounding rectangle at its peak
    want[15:18, 30:36] = 0.4
    assert np.allclose(back, want)
    # a rectangular map survives the round trip exactly
    rect = np.zeros((20, 40), np.float32)
    rect[15:18, 30:36] = 0.4
    again = boxes_from_heatmap(rect, 0.33)
    assert np.allclose(heatmap_from_boxes([b for b, _ in again], [p for _, p in again], 20, 40), rect)


def _tfrecord(path: Path, rows: list[dict]) -> None:
    from tfrecord import TFRecordWriter

    w = TFRecordWriter(str(path))
    for r in rows:
        w.write({
            "filename": (r["filename"].encode(), "byte"),
            "artifact_map": (_png_map(r["artifact"]), "byte"),
            "misalignment_map": (_png_map(r["misalignment"]), "byte"),
            "prompt_misalignment_label": (b"0 0 1", "byte"),
            **{k: (r.get(k, 0.5), "float") for k in ("aesthetics_score", "artifact_score", "misalignment_score",
                                                     "overall_score")},
        })  # fmt: skip
    w.close()


@pytest.fixture()
def richhf(tmp_path):
    img = tmp_path / "pickapic"
    img.mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (64, 64), (120, 90, 60)).save(img / f"{name}.png")
    (img / "a.txt").write_text("a red apple\n")
    caps = tmp_path / "captions.jsonl"
    caps.write_text(json.dumps({"filename": "b.png", "caption": "two cats"}) + "\n")
    art, mis = np.zeros((32, 32), np.float32), np.zeros((32, 32), np.float32)
    art[8:16, 0:8] = 0.8
    mis[0:32, 16:32] = 0.2  # below 0.33: no misalignment
    both = mis.copy()
    both[0:16, 16:32] = 0.7
    rows = [
        {"filename": "a.png", "artifact": art, "misalignment": mis, "artifact_score": 0.25},
        {"filename": "b.png", "artifact": np.zeros((32, 32), np.float32), "misalignment": both},
        {"filename": "missing.png", "artifact": art, "misalignment": mis},
    ]
    rec = tmp_path / "test.tfrecord"
    _tfrecord(rec, rows)
    return tmp_path, rec, img, caps


def test_import_joins_images_reads_heatmaps_and_rejects_what_is_missing(richhf):
    root, tfrecord, img, caps = richhf
    out = root / "r.jsonl"
    res = subprocess.run([SDG, "import", "richhf", str(tfrecord), "--images", str(img), "--captions", str(caps),
                          "--out", str(out), "--split", "test"], capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = {r["image_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"a", "b"} and rows["a"]["caption"] == "a red apple" and rows["b"]["caption"] == "two cats"
    a = rows["a"]
    assert [(d["label"], d["box_2d"], d["importance"]) for d in a["defects"]] == [("artifact", [0, 250, 250, 500], 80)]
    assert a["provenance"]["heatmap_peaks"] == {"artifact": 0.8, "misalignment": 0.2}
    assert a["provenance"]["scores"]["artifact_score"] == 0.25 and a["split"] == "test"
    assert [(d["label"], d["box_2d"]) for d in rows["b"]["defects"]] == [("misalignment", [500, 0, 1000, 500])]
    assert (root / a["provenance"]["heatmaps"]["artifact"]).is_file()
    rejects = [json.loads(x) for x in (root / "r.import.rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 1 and "missing.png" in rejects[0]["reason"]
    assert json.loads((root / "r.import.summary.json").read_text())["read"] == 3
    assert subprocess.run([SDG, "validate", str(out)], capture_output=True).returncode == 0


def _rec(iid: str, art: float, mis: float) -> ImageRecord:
    return ImageRecord(image_id=iid, defects=[], image_path=f"{iid}.png", width=8, height=8,
                       provenance={"heatmap_peaks": {"artifact": art, "misalignment": mis}})  # fmt: skip


def test_image_level_metrics_match_a_hand_count():
    gt = [_rec("1", 0.9, 0.1), _rec("2", 0.5, 0.6), _rec("3", 0.2, 0.4), _rec("4", 0.1, 0.0)]
    box = Box(0, 0, 100, 100)
    preds = {
        "1": [Defect(box, "artifact", "x", 50)],  # art TP
        "2": [Defect(box, "misalignment", "x", 50)],  # art FN, mis TP
        "3": [Defect(box, "artifact", "x", 50)],  # art FP, mis FN
    }  # image 4 has no prediction: nothing predicted, TN for both
    r = image_level(gt, preds, 0.33)
    art, mis = r["artifact"], r["misalignment"]
    assert (art["tp"], art["fp"], art["fn"], art["tn"]) == (1, 1, 1, 1)
    assert art["precision"] == 0.5 and art["recall"] == 0.5 and art["f1"] == 0.5
    assert (mis["tp"], mis["fp"], mis["fn"], mis["tn"]) == (1, 0, 1, 2)
    assert mis["precision"] == 1.0 and mis["recall"] == 0.5 and mis["f1"] == pytest.approx(2 / 3)
    assert image_level(gt, preds, 0.55)["artifact"]["fn"] == 0  # a higher threshold: image 2 has no artifact


def test_eval_image_level_prints_table3_beside_the_papers_rows(richhf):
    root, tfrecord, img, caps = richhf
    out = root / "r.jsonl"
    import_richhf(tfrecord, out, RichHFConfig(images=str(img), captions=str(caps)))
    pred = root / "pred.jsonl"
    pred.write_text(json.dumps({"image_id": "a", "response": '<think>x</think><answer>[{"box_2d": [0, 250, 250, '
                               '500], "label": "artifact", "description": "a smear", "importance": 70}]</answer>'})
                    + "\n" + json.dumps({"image_id": "b", "defects": []}) + "\n")  # fmt: skip
    res = subprocess.run([SDG, "eval-image-level", "--gt", str(out), "--pred", str(pred), "--out",
                          str(root / "t3.json")], capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "ImageDoctor @0.33" in res.stdout and "SDG (paper)" in res.stdout and "this run" in res.stdout
    report = json.loads((root / "t3.json").read_text())
    assert report["artifact"]["tp"] == 1 and report["misalignment"]["fn"] == 1 and report["images"] == 2


def _frame(data: bytes) -> bytes:
    """One TFRecord frame with correct CRCs."""
    import struct

    from sdg_data.interop.richhf import _masked_crc

    head = struct.pack("<Q", len(data))
    return head + struct.pack("<I", _masked_crc(head)) + data + struct.pack("<I", _masked_crc(data))


def _run_import(root: Path, tfrecord: Path, img: Path, caps: Path):
    out = root / "r.jsonl"
    res = subprocess.run([SDG, "import", "richhf", str(tfrecord), "--images", str(img), "--captions", str(caps),
                          "--out", str(out)], capture_output=True, text=True)  # fmt: skip
    rejects = root / "r.import.rejects.jsonl"
    got = [json.loads(x)["reason"] for x in rejects.read_text().splitlines()] if rejects.exists() else []
    rows = [json.loads(x)["image_id"] for x in out.read_text().splitlines()] if out.exists() else []
    return res, rows, got


def test_a_hostile_tfrecord_costs_bounded_memory_and_each_bad_record_is_a_reject(richhf):
    """Lengths and CRCs are checked before anything is allocated: a 20-byte file claiming 600 MB is one line; a
    record whose data fails its CRC, one that is not an Example, a heatmap past the pixel cap and a NaN score are
    each a reject with the record and field, and the good records around them are kept."""
    import resource
    import struct

    from sdg_data.interop.richhf import _masked_crc

    root, tfrecord, img, caps = richhf
    good = tfrecord.read_bytes()
    bomb = root / "bomb.tfrecord"
    head = struct.pack("<Q", 600 * 2**20)
    bomb.write_bytes(head + struct.pack("<I", _masked_crc(head)) + b"\0" * 8)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    res, rows, reasons = _run_import(root, bomb, img, caps)
    assert res.returncode != 0 and rows == [] and "claims 629145600 bytes" in reasons[0], (res.stderr, reasons)
    assert "kept 0 of 1" in res.stderr and "Traceback" not in res.stderr
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss - before < 400_000  # KB: no 600 MB buffer

    # good records, then: a flipped data byte, a payload that is no Example, a 5000 x 5000 map, a NaN score
    flipped = bytearray(good[: len(good) // 3])
    (n_a,) = struct.unpack("<Q", good[:8])
    first = good[: 16 + n_a]
    bad = bytearray(first)
    bad[20] ^= 0xFF
    big = np.zeros((5000, 5000), np.float32)
    extra = root / "extra.tfrecord"
    _tfrecord(extra, [{"filename": "a.png", "artifact": big, "misalignment": big},
                      {"filename": "b.png", "artifact": big[:8, :8], "misalignment": big[:8, :8],
                       "artifact_score": float("nan")}])  # fmt: skip
    mixed = root / "mixed.tfrecord"
    mixed.write_bytes(first + bytes(bad) + _frame(b"\xff\xff not a protobuf") + extra.read_bytes() + good[16 + n_a :])
    del flipped
    res, rows, reasons = _run_import(root, mixed, img, caps)
    assert res.returncode == 0, res.stderr
    assert rows == ["a", "b"], rows  # the first and the last file's good records
    assert len(reasons) == 5, reasons  # bad CRC, not an Example, the big map, the NaN score, missing.png
    assert "record #2: its data fails its CRC" in reasons[0] and "not a tf.train.Example" in reasons[1]
    assert "'artifact_map'" in reasons[2] and "pixel cap" in reasons[2]
    assert "'artifact_score'" in reasons[3] and "finite" in reasons[3]
    assert subprocess.run([SDG, "validate", str(root / "r.jsonl")], capture_output=True).returncode == 0

    # a truncated tail: the records before it are kept, the tail is one reject
    cut = root / "cut.tfrecord"
    cut.write_bytes(good[:-7])
    res, rows, reasons = _run_import(root, cut, img, caps)
    assert rows == ["a", "b"] and any("claims" in r or "ends inside" in r for r in reasons), reasons


def test_nan_in_any_field_is_refused_on_read_and_never_written(tmp_path):
    from sdg_data.io.files import write_jsonl

    line = {"image_id": "x", "image_path": "x.png", "caption": "c", "defects": [], "provenance": {"s": float("nan")}}
    with pytest.raises(ValueError):
        write_jsonl(tmp_path / "w.jsonl", [line])
    assert not (tmp_path / "w.jsonl").exists()
    p = tmp_path / "nan.jsonl"
    p.write_text('{"image_id": "x", "caption": "c", "defects": [], "provenance": {"scores": {"a": NaN}}}\n')
    res = subprocess.run([SDG, "validate", str(p)], capture_output=True, text=True)
    assert (
        res.returncode != 0 and "'provenance.scores.a'" in res.stdout + res.stderr and "NaN" in res.stdout + res.stderr
    )


def test_eval_image_level_with_no_shared_ids_fails_as_eval_does(richhf):
    root, tfrecord, img, caps = richhf
    out = root / "r.jsonl"
    import_richhf(tfrecord, out, RichHFConfig(images=str(img), captions=str(caps)))
    pred = root / "pred.jsonl"
    pred.write_text(json.dumps({"image_id": "zzz", "defects": []}) + "\n")
    res = subprocess.run(
        [SDG, "eval-image-level", "--gt", str(out), "--pred", str(pred)], capture_output=True, text=True
    )
    assert res.returncode != 0 and "no prediction for any of the 2" in res.stderr, res.stdout
