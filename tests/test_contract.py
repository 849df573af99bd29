"""One contract: what any command writes passes the core validation; one file mode; Label Studio exports of the
wrong shape are rejects, not crashes."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from annotation.config import AnnotateConfig
from annotation.pull import convert_export, write_outputs
from sdg_data.io.jsonl import read_records
from tests.conftest import DEMO


ROOT = Path(__file__).resolve().parents[1]
BOX = {"x": 10, "y": 10, "width": 20, "height": 20, "rotation": 0}


def _region(rid="r1", text=("six fingers",), number=40):
    base = {"id": rid, "to_name": "image", "original_width": 120, "original_height": 80, "image_rotation": 0}
    return [
        {**base, "from_name": "defect", "type": "rectanglelabels", "value": {**BOX, "rectanglelabels": ["artifact"]}},
        {
            **base,
            "from_name": "description",
            "type": "textarea",
            "value": {**BOX, "text": list(text) if isinstance(text, tuple) else text},
        },
        {**base, "from_name": "importance", "type": "number", "value": {**BOX, "number": number}},
    ]


def _task(tid, data=None, annotations=None):
    d = {"image_id": f"img-{tid}", "image": f"/data/local-files/?d=images/{tid}.png", "caption": "a cat",
         "generator": "g", "split": "train"}  # fmt: skip
    return {"id": tid, "data": {**d, **(data or {})}, "annotations": annotations}


def _ann(aid, result=..., **kw):
    a = {"id": aid, "completed_by": 1, "was_cancelled": False, "lead_time": 3.0, "created_at": "2026-11-30T10:00:00Z",
         **kw}  # fmt: skip
    if result is not ...:
        a["result"] = result
    return a


def test_label_studio_exports_of_the_wrong_shape_are_rejects(tmp_path):
    (tmp_path / "images").mkdir()
    cfg = AnnotateConfig(image_root=str(tmp_path / "images"), check_image_size=False)
    tasks = [
        _task(1, annotations=[_ann(11, _region())]),  # the good one
        ["not", "a", "task"],
        {"id": 3, "data": ["wrong"], "annotations": []},
        {"id": 4, "data": {"image_id": "img-4"}, "annotations": {"wrong": "type"}},
        _task(5, annotations=["not an annotation"]),
        _task(6, annotations=[_ann(61)]),  # no result at all: not a clean image
        _task(7, annotations=[_ann(71, _region(text="one text as a string"))]),
        _task(8, data={"image_id": 42}, annotations=[_ann(81, [])]),
        _task(9, data={"caption": 1234}, annotations=[_ann(91, [])]),
        _task(10, data={"split": "validation"}, annotations=[_ann(101, [])]),
        _task(11, data={"image": "/data/local-files/?d=../../etc/passwd"}, annotations=[_ann(111, [])]),
        _task(12, annotations=[_ann(121, [{"id": "r", "from_name": "defect", "value": ["wrong"]}])]),
        _task(13, annotations=[_ann(131, [])]),  # a clean image, submitted with no box
    ]
    result = convert_export(tasks, cfg, doc_root=tmp_path)
    summary = write_outputs(result, tmp_path / "pulled.jsonl")

    def task_of(r) -> int | None:  # a pull reject names its task first: "task 12, annotation 121 by ..."
        tid = r.where.split(",")[0].removeprefix("task ")
        return None if tid == "None" else int(tid)

    reasons = {task_of(r): r.reason for r in result["rejects"]}
    assert set(reasons) == {None, 3, 4, 5, 6, 8, 9, 10, 11, 12}
    assert "has no 'result' list" in reasons[6] and "image_id" in reasons[8] and "caption" in reasons[9]
    assert "split" in reasons[10] and "outside" in reasons[11] and "must be a list" in reasons[4]
    recs = {r.image_id: r for r in read_records(tmp_path / "pulled.jsonl")}  # pull's output passes validate
    assert set(recs) == {"img-1", "img-7", "img-13"}
    assert recs["img-7"].defects[0].description == "one text as a string"
    assert recs["img-13"].defects == []
    read_records(tmp_path / "pulled.all.jsonl", unique=False)
    assert summary["malformed_tasks"] == 3 and summary["valid"] == 3


def test_every_stage_output_passes_the_core_validation(tmp_path):
    """distill, build's test config through load_records, the importer and pull write valid records."""
    from distill.config import DistillConfig
    from distill.runner import distill_file
    from sdg_data.dataset.build import BuildConfig, build_dataset
    from sdg_data.interop.sdg30k import import_sdg30k
    from sdg_data.io.jsonl import load_records

    distill_file(DEMO / "sample" / "records.jsonl", tmp_path / "d", DistillConfig(progress=False))
    read_records(tmp_path / "d" / "distilled.jsonl")
    cfg = BuildConfig(test_fraction=0.33, image_roots=[str(DEMO)])
    build_dataset(tmp_path / "d" / "distilled.jsonl", tmp_path / "ds", cfg, progress=False)
    for r in load_records(tmp_path / "ds"):
        r.validate()
    row = {"filepath": "images/a.png", "caption": "c", "generator": "g",
           "ann_translated_bboxes": [{"box_2d": [1, 2, 30, 40], "label": "artifact", "description": "d"}]}  # fmt: skip
    (tmp_path / "test.jsonl").write_text(json.dumps(row) + "\n")
    import_sdg30k(tmp_path / "test.jsonl", tmp_path / "imp.jsonl")
    assert len(read_records(tmp_path / "imp.jsonl")) == 1


def _modes(folder: Path) -> set[int]:
    return {stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_every_output_file_gets_the_umask_mode(tmp_path, umask):
    out = tmp_path / "o"
    sdg = [sys.executable, "-m", "sdg_data.cli"]
    script = [
        [*sdg, "distill", str(DEMO / "sample" / "records.jsonl"), "--out", str(out / "distill")],
        [*sdg, "build", str(out / "distill" / "distilled.jsonl"), "--out", str(out / "ds"), "--image-root",
         str(DEMO), "--test-fraction", "0.33"],
        [*sdg, "viz", str(out / "ds"), "--out", str(out / "viz"), "--limit", "2"],
        [*sdg, "eval", "--gt", str(DEMO / "gt.jsonl"), "--pred", str(DEMO / "pred.jsonl"), "--embedder", "none",
         "--out", str(out / "eval.json")],
        [*sdg, "reward", "--gt", str(DEMO / "gt.jsonl"), "--pred", str(DEMO / "pred.jsonl"), "--embedder",
         "lexical", "--out", str(out / "rewards.jsonl")],
    ]  # fmt: skip

    def set_umask():
        os.umask(umask)

    for cmd in script:
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, preexec_fn=set_umask, timeout=300)
        assert res.returncode == 0, (cmd, res.stderr[-2000:])
    assert _modes(out) == {0o666 & ~umask}
