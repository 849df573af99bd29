"""sdg export coco / sdg import coco: valid COCO (pycocotools loads it), exact round trip, bad entries rejected."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sdg_data.boxes import Box


ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sdg_data" / "demo" / "sample" / "records.jsonl"
SDG = str(Path(sys.executable).parent / "sdg")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SDG, *args], capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""})


def test_box_to_coco_and_back():
    b = Box.from_pixels([10, 20, 110, 70], 200, 100)
    assert b.to_coco(200, 100) == pytest.approx([10, 20, 100, 50])
    assert Box.from_coco([10, 20, 100, 50], 200, 100) == b


def test_export_loads_in_pycocotools_and_imports_back_exactly(tmp_path):
    from pycocotools.coco import COCO

    out = tmp_path / "coco" / "sdg.json"
    res = _run("export", "coco", str(SAMPLE), "--out", str(out), "--copy-images", str(tmp_path / "coco" / "images"))
    assert res.returncode == 0, res.stderr
    coco = COCO(str(out))
    src = [json.loads(x) for x in SAMPLE.read_text().splitlines()]
    assert len(coco.getImgIds()) == len(src)
    assert len(coco.getAnnIds()) == sum(len(r["defects"]) for r in src)
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {"artifact", "misalignment"}
    for img in coco.loadImgs(coco.getImgIds()):
        assert (out.parent / img["file_name"]).is_file()  # copied, referenced relative to the JSON
    ann = coco.loadAnns(coco.getAnnIds())[0]
    assert set(ann["attributes"]) == {"description", "importance"} and ann["area"] == pytest.approx(
        ann["bbox"][2] * ann["bbox"][3], rel=1e-3)  # fmt: skip
    back = tmp_path / "back.jsonl"
    res = _run("import", "coco", str(out), "--out", str(back))
    assert res.returncode == 0, res.stderr
    rows = {r["image_id"]: r for r in map(json.loads, back.read_text().splitlines())}
    for r in src:
        got = rows[r["image_id"]]
        assert [(d["box_2d"], d["label"], d["description"], d["importance"]) for d in got["defects"]] == [
            (d["box_2d"], d["label"], d["description"], d["importance"]) for d in r["defects"]]  # fmt: skip
        assert (back.parent / got["image_path"]).is_file() and got["caption"] == r["caption"]
    assert _run("validate", str(back)).returncode == 0


def test_a_built_dataset_exports_with_its_images_copied_out(tmp_path):
    from pycocotools.coco import COCO

    ds = tmp_path / "ds"
    assert _run("distill", str(SAMPLE), "--out", str(tmp_path / "d")).returncode == 0  # the offline teacher
    res = _run("build", str(tmp_path / "d" / "distilled.jsonl"), "--out", str(ds), "--image-root", str(SAMPLE.parent))
    assert res.returncode == 0, res.stderr
    out = tmp_path / "x.json"
    res = _run("export", "coco", str(ds), "--out", str(out))
    assert res.returncode == 0, res.stderr
    coco = COCO(str(out))
    assert len(coco.getImgIds()) == 24
    assert all((tmp_path / i["file_name"]).is_file() for i in coco.loadImgs(coco.getImgIds()))


def test_import_rejects_what_is_not_a_defect_and_keeps_the_rest(tmp_path):
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 100, "height": 100},
            {"id": 2, "file_name": "b.png", "width": 100, "height": 100},
            {"id": 3, "file_name": "c.png", "width": 0, "height": 100},
            {"id": 4, "file_name": "d.png", "width": 100, "height": 100},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50],
             "attributes": {"description": "a melted hand", "importance": 60}},
            {"id": 2, "image_id": 2, "category_id": 7, "bbox": [0, 0, 5, 5], "attributes": {"description": "x"}},
            {"id": 3, "image_id": 4, "category_id": 2, "bbox": [0, 0, 5, 5]},
        ],
        "categories": [{"id": 1, "name": "artifact"}, {"id": 2, "name": "misalignment"}, {"id": 7, "name": "cat"}],
    }  # fmt: skip
    src = tmp_path / "in.json"
    src.write_text(json.dumps(data))
    res = _run("import", "coco", str(src), "--out", str(tmp_path / "r.jsonl"))
    assert res.returncode == 0 and "imported 1 images" in res.stdout and "rejected 3" in res.stdout
    reasons = [json.loads(x)["reason"] for x in (tmp_path / "r.import.rejects.jsonl").read_text().splitlines()]
    assert any("'cat'" in r or "7" in r for r in reasons) and any("width" in r for r in reasons)
    assert any("description" in r for r in reasons)
    summary = json.loads((tmp_path / "r.import.summary.json").read_text())
    assert summary["read"] == 4 and summary["kept"] == 1 and summary["rejected"] == 3
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    res = _run("import", "coco", str(bad), "--out", str(tmp_path / "z.jsonl"))
    assert res.returncode != 0 and "not a readable COCO JSON" in res.stderr and "Traceback" not in res.stderr


def test_import_accounts_for_every_entry_and_coerces_nothing(tmp_path):
    """An annotation whose image is unknown, image entries sharing an id, an importance of true and a description
    that is an object: each is a reject with its entry and field, nothing is dropped or converted silently, and
    read = kept + rejected over images and orphan annotations."""
    ok = {"width": 100, "height": 100}
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", **ok}, {"id": 2, "file_name": "b.png", **ok},
            {"id": 2, "file_name": "b2.png", **ok}, {"id": 3, "file_name": "c.png", **ok},
            {"id": 4, "file_name": "d.png", **ok}, {"id": 5, "file_name": "sub/a.png", **ok},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50], "attributes": {"description": "hand"}},
            {"id": 2, "image_id": 99, "category_id": 1, "bbox": [0, 0, 5, 5], "attributes": {"description": "lost"}},
            {"id": 3, "image_id": "1", "category_id": 1, "bbox": [0, 0, 5, 5], "attributes": {"description": "str"}},
            {"id": 4, "image_id": 3, "category_id": 1, "bbox": [0, 0, 5, 5],
             "attributes": {"description": "x", "importance": True}},
            {"id": 5, "image_id": 4, "category_id": 1, "bbox": [0, 0, 5, 5], "attributes": {"description": {"a": 1}}},
            "not an object",
        ],
        "categories": [{"id": 1, "name": "artifact"}],
    }  # fmt: skip
    src = tmp_path / "in.json"
    src.write_text(json.dumps(data))
    res = _run("import", "coco", str(src), "--out", str(tmp_path / "r.jsonl"))
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["image_id"] for r in rows] == ["a"] and [d["description"] for d in rows[0]["defects"]] == ["hand"]
    rej = [json.loads(x) for x in (tmp_path / "r.import.rejects.jsonl").read_text().splitlines()]
    reasons = " | ".join(r["reason"] for r in rej)
    assert "image_id 99 names no image entry" in reasons and "image_id '1' names no image entry" in reasons
    assert "annotations[5]: not an object" in reasons
    assert reasons.count("used by 2 image entries") == 2
    assert "'importance' must be whole, got True" in reasons and "'description' must be text" in reasons
    assert "'a' (from sdg_image_id or the file name) is already imported" in reasons
    s = json.loads((tmp_path / "r.import.summary.json").read_text())
    assert (s["read"], s["kept"], s["rejected"]) == (6 + 3, 1, 8)
