"""Property tests over JSON shapes, one per reader of outside data: whatever shape a file or a server reply has,
each reader ends with a result or a one-line ValueError (never another exception), one bad entry never stops it,
and its counts reconcile (every entry kept or rejected). Inputs are valid documents with random parts replaced by
arbitrary JSON, which reaches deeper than random documents would."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

leaf = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
anything = st.recursive(
    leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=16
)


def mutate(data: st.DataObject, doc: Any, times: int = 3) -> Any:
    """``doc`` with up to ``times`` random nodes replaced by arbitrary JSON (or removed, for a mapping's key)."""
    doc = json.loads(json.dumps(doc))
    for _ in range(data.draw(st.integers(0, times))):
        parent, key, node = None, None, doc
        while isinstance(node, (dict, list)) and node and data.draw(st.booleans()):
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            parent, key = node, data.draw(st.sampled_from(keys))
            node = node[key]
        if parent is None:
            return data.draw(anything)
        if isinstance(parent, dict) and data.draw(st.booleans()):
            del parent[key]
        else:
            parent[key] = data.draw(anything)
    return doc


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


GOOD_RECORD = {
    "image_id": "x",
    "image_path": "x.png",
    "width": 64,
    "height": 64,
    "caption": "a red apple",
    "defects": [{"box_2d": [10, 10, 500, 500], "label": "artifact", "description": "a smear", "importance": 40}],
    "provenance": {"scores": {"a": 0.5}},
}


@SETTINGS
@given(st.data())
def test_records_reader(data):
    """Stage inputs: every line is kept or rejected with a reason; the count of lines read reconciles."""
    from sdg_data.io.jsonl import screen_records

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from PIL import Image

        Image.new("RGB", (64, 64)).save(tmp / "x.png")
        docs = [mutate(data, {**GOOD_RECORD, "image_id": f"i{k}"}) for k in range(3)]
        src = tmp / "r.jsonl"
        src.write_text("".join(json.dumps(d, allow_nan=True) + "\n" for d in docs))
        usable, rejects, read = screen_records(src, ("caption",), "test")
        assert read == 3 and len(usable) + len(rejects) == 3
        assert all(isinstance(r.reason, str) and r.reason and r.line for r in rejects)


GOOD_COCO = {
    "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80},
               {"id": 2, "file_name": "b.png", "width": 100, "height": 80}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20],
                     "attributes": {"description": "a melted hand", "importance": 60}},
                    {"id": 2, "image_id": 2, "category_id": 2, "bbox": [0, 0, 50, 40],
                     "attributes": {"description": "no dog"}}],
    "categories": [{"id": 1, "name": "artifact"}, {"id": 2, "name": "misalignment"}],
}  # fmt: skip


@SETTINGS
@given(st.data())
def test_coco_import(data):
    """COCO JSON: every image entry and every annotation that belongs to none is kept or a reject; read reconciles
    (StageReport checks it) and no kept description is anything but the text given."""
    from sdg_data.interop.coco import import_coco

    doc = mutate(data, GOOD_COCO, times=4)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "c.json", Path(tmp) / "r.jsonl"
        src.write_text(json.dumps(doc, allow_nan=True))
        try:
            s = import_coco(src, out)
        except ValueError as exc:
            assert "\n" not in str(exc) and str(src) in str(exc)
            return
        assert s["read"] == s["kept"] + s["rejected"]
        given_texts = json.dumps(doc, allow_nan=True)
        for row in _lines(out):
            for d in row["defects"]:
                assert isinstance(d["description"], str) and json.dumps(d["description"]) in given_texts


GOOD_SDG30K = {
    "filepath": "images/flux/1.png",
    "caption": "a cat",
    "generator": "FLUX.2-dev",
    "ann_translated_bboxes": [{"box_2d": [10, 10, 400, 400], "label": "artifact", "description": "paw",
                               "importance": 20}],
}  # fmt: skip


@SETTINGS
@given(st.data())
def test_sdg30k_import(data):
    from sdg_data.interop.sdg30k import ImportConfig, import_sdg30k

    rows = [mutate(data, {**GOOD_SDG30K, "filepath": f"images/flux/{k}.png"}) for k in range(3)]
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "a.jsonl", Path(tmp) / "r.jsonl"
        src.write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in rows))
        report, _ = import_sdg30k(src, out, None, ImportConfig())
        assert report.read == 3 and report.kept + report.rejected == 3


@SETTINGS
@given(st.data())
def test_prediction_reader(data):
    """Predictions: a malformed line is a format failure or a one-line error naming the line, never a crash."""
    from sdg_data.scoring.evaluation import EvalConfig, index_predictions

    good = {"image_id": "x", "response": '<think>t</think><answer>[{"box_2d": [1, 2, 300, 400], "label": '
            '"artifact", "description": "a smear", "importance": 50}]</answer>'}  # fmt: skip
    rows = [(k + 1, mutate(data, {**good, "image_id": f"i{k}"})) for k in range(3)]
    try:
        preds, stats = index_predictions(rows, EvalConfig(embedder="none"), source="p.jsonl")
    except ValueError as exc:
        assert "p.jsonl:" in str(exc) and "\n" not in str(exc)
        return
    assert len(preds) <= 3 and stats["lines"] == 3


def _task(k: int) -> dict:
    return {
        "id": k,
        "data": {"image": f"/data/local-files/?d=images/{k}.png", "image_id": f"i{k}", "caption": "a cat"},
        "annotations": [{
            "id": 10 + k, "completed_by": 1, "was_cancelled": False, "updated_at": "2026-01-01T00:00:00Z",
            "result": [
                {"id": "r1", "from_name": "box", "to_name": "image", "type": "rectanglelabels",
                 "original_width": 64, "original_height": 64,
                 "value": {"x": 10, "y": 10, "width": 30, "height": 30, "rectanglelabels": ["artifact"]}},
                {"id": "r1", "from_name": "description", "to_name": "image", "type": "textarea",
                 "value": {"x": 10, "y": 10, "width": 30, "height": 30, "text": ["a smear on the wall"]}},
            ],
        }],
    }  # fmt: skip


@SETTINGS
@given(st.data())
def test_label_studio_export_reader(data):
    """pull --from-export: every annotation of every task ends as a record or a reject; nothing raises."""
    from annotation.config import AnnotateConfig
    from annotation.pull import convert_export

    tasks = [mutate(data, _task(k), times=4) for k in range(3)]
    if data.draw(st.booleans()):
        tasks.append(data.draw(anything))
    result = convert_export(tasks, AnnotateConfig())
    assert result["counts"]["tasks"] == len(tasks)
    assert all(isinstance(r.reason, str) and r.stage == "pull" for r in result["rejects"])


def _judge_task(k: int) -> dict:
    return {"id": k, "data": {"pair_id": f"p{k}"},
            "meta": {"judge": "sdg-judge/1", "order": "ab", "a_method": "A", "b_method": "B", "a_image_id": "a",
                     "b_image_id": "b"},
            "annotations": [{"completed_by": {"id": 1, "email": "x@y"}, "was_cancelled": False,
                             "result": [{"from_name": "verdict", "value": {"choices": ["Left is better"]}},
                                        {"from_name": "comment", "value": {"text": ["sharper"]}}]}]}  # fmt: skip


@SETTINGS
@given(st.data())
def test_judge_export_reader(data):
    """judge-pull: every task and annotation is a judgment or a reject with the task and field."""
    from annotation.judge import judgments, tally

    tasks = [mutate(data, _judge_task(k), times=4) for k in range(3)]
    rows, rejects = judgments(tasks, {})
    assert all(r["verdict"] in ("good", "same", "bad") and isinstance(r["comment"], str) for r in rows)
    assert all(isinstance(r.reason, str) and r.stage == "judge" for r in rejects)
    tally(rows)


def _frame(payload: bytes) -> bytes:
    from sdg_data.interop.richhf import _masked_crc

    head = struct.pack("<Q", len(payload))
    return head + struct.pack("<I", _masked_crc(head)) + payload + struct.pack("<I", _masked_crc(payload))


@SETTINGS
@given(st.lists(st.binary(max_size=64), max_size=4), st.binary(max_size=24), st.booleans())
def test_tfrecord_reader(payloads, tail, flip):
    """RichHF TFRecords: random payloads in valid frames, then random bytes: each frame is an example or an error
    entry, and the reader ends; memory is never sized from an unchecked length."""
    from sdg_data.interop.richhf import read_tfrecord

    blob = b"".join(_frame(p) for p in payloads) + tail
    if flip and blob:
        blob = blob[:-1] + bytes([blob[-1] ^ 1])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.tfrecord"
        path.write_bytes(blob)
        got = list(read_tfrecord(path))
    assert len(got) <= len(payloads) + 1 + len(tail) // 12
    assert all(isinstance(x, (dict, ValueError)) for _, x in got)


@SETTINGS
@given(st.data())
def test_status_and_disagreements_read_any_export(data):
    """status and disagreements over an export of any shape (mixed id types, missing users, odd annotations):
    figures or a one-line error, never a crash."""
    from annotation.config import AnnotateConfig
    from annotation.status import disagreement_list, format_disagreements, format_status, status

    tasks = [mutate(data, _task(k), times=4) for k in range(3)]
    for t in tasks[:2]:  # a second annotator on the same tasks, so there is something to disagree on
        anns = t.get("annotations") if isinstance(t, dict) else None
        if isinstance(anns, list) and anns and isinstance(anns[0], dict):
            t["annotations"].append(
                {**t["annotations"][0], "id": data.draw(anything), "completed_by": data.draw(anything)}
            )
    if data.draw(st.booleans()):
        tasks.append(data.draw(anything))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "export.json"
        src.write_text(json.dumps(tasks, allow_nan=True))
        try:
            s = status(None, AnnotateConfig(), from_export=src)
            format_status(s)
            d = disagreement_list(None, AnnotateConfig(), Path(tmp) / "d.jsonl", 5, from_export=src)
            format_disagreements(d, Path(tmp) / "d.jsonl")
        except ValueError as exc:
            assert "\n" not in str(exc)
