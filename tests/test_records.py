import json

import pytest

from sdg_data.io.files import write_records
from sdg_data.io.jsonl import InputError, read_records
from sdg_data.records import ImageRecord, RecordError
from tests.conftest import DEMO, defect


def _rec(**kw):
    base = {"image_id": "img-1", "defects": [{"box_2d": [10, 20, 30, 40], "label": "artifact", "description": "d"}]}
    base.update(kw)
    return base


def test_minimal_interchange_line_is_a_record():
    rec = ImageRecord.from_json(_rec())
    assert rec.defects[0].box.to_grid() == [10, 20, 30, 40]
    assert rec.defects[0].importance is None
    assert ImageRecord.from_json({"image_id": "clean", "defects": []}).defects == []


def test_json_round_trip_with_pixels_and_desc_alias():
    obj = _rec(
        width=2048,
        height=1024,
        defects=[{"box_2d": [500, 0, 1000, 500], "label": "misalignment", "desc": "wrong colour", "importance": 40.0}],
    )
    rec = ImageRecord.from_json(obj)
    out = rec.to_json()
    assert out["defects"][0]["box_px"] == [1024.0, 0.0, 2048.0, 512.0]
    assert out["defects"][0]["description"] == "wrong colour" and out["defects"][0]["importance"] == 40
    assert ImageRecord.from_json(out).to_json() == out


@pytest.mark.parametrize(
    ("patch", "field", "reason"),
    [
        ({"defects": [{"box_2d": [10, 20, 30, 40], "label": "blur"}]}, "defects[0].label", "must be one of"),
        ({"defects": [{"box_2d": [30, 20, 10, 40], "label": "artifact"}]}, "defects[0].box_2d", "inverted"),
        ({"defects": [{"box_2d": [10, 20, 10, 40], "label": "artifact"}]}, "defects[0].box_2d", "zero-area"),
        ({"defects": [{"box_2d": [10, 20, 30, 1040], "label": "artifact"}]}, "defects[0].box_2d", "outside"),
        ({"defects": [{"box_2d": [1, 2, 3], "label": "artifact"}]}, "defects[0].box_2d", "4 numbers"),
        ({"defects": [{"label": "artifact"}]}, "defects[0].box_2d", "missing"),
        (
            {"defects": [{"box_2d": [1, 2, 3, 4], "label": "artifact", "importance": 150}]},
            "defects[0].importance",
            "1-100",
        ),
        (
            {"defects": [{"box_2d": [1, 2, 3, 4], "label": "artifact", "importance": "high"}]},
            "defects[0].importance",
            "integer",
        ),
        (
            {"defects": [{"box_2d": [1, 2, 3, 4], "label": "artifact", "importance": 55.5}]},
            "defects[0].importance",
            "integer",
        ),
        ({"width": 0}, "width", "positive"),
        ({"split": "val"}, "split", "must be one of"),
        ({"colour": "x"}, "<record>", "unknown keys"),
        ({"defects": "none"}, "defects", "must be a list, or null when not annotated"),
        ({"provenance": {"annotated": "no"}}, "provenance.annotated", "must be true or false"),
        ({"schema_version": "2.0"}, "schema_version", "not compatible"),
    ],
)
def test_errors_name_record_field_reason(patch, field, reason):
    with pytest.raises(RecordError) as info:
        ImageRecord.from_json(_rec(**patch))
    assert info.value.record_id == "img-1"
    assert info.value.field == field
    assert reason in info.value.reason
    assert str(info.value).startswith("record 'img-1' field ")


def test_missing_defects_and_id():
    with pytest.raises(RecordError, match="image_id"):
        ImageRecord.from_json({"defects": []})


def test_not_annotated_is_told_apart_from_clean_and_round_trips():
    """``defects`` null or absent: not annotated; ``[]``: annotated clean; the schema 1.1 marker reads as not
    annotated and is written in the current form."""
    for obj in ({"image_id": "a"}, {"image_id": "a", "defects": None}):
        rec = ImageRecord.from_json(obj)
        assert not rec.annotated and rec.defects == [] and not rec.old_form
        assert rec.to_json()["defects"] is None
        with pytest.raises(RecordError, match="not annotated yet"):
            rec.require_annotated()
    clean = ImageRecord.from_json({"image_id": "a", "defects": []})
    assert clean.annotated and clean.to_json()["defects"] == []
    clean.require_annotated()
    old = ImageRecord.from_json({"image_id": "a", "defects": [], "provenance": {"annotated": False, "seed": 1}})
    assert not old.annotated and old.old_form
    assert old.to_json()["defects"] is None and old.to_json()["provenance"] == {"seed": 1}
    assert ImageRecord.from_json(old.to_json()) == old
    marked = ImageRecord.from_json({"image_id": "a", "defects": [], "provenance": {"annotated": True}})
    assert marked.annotated and "annotated" not in marked.provenance
    box = {"box_2d": [1, 2, 3, 4], "label": "artifact", "description": "x"}
    with pytest.raises(RecordError, match="is false, but the record has defects"):
        ImageRecord.from_json({"image_id": "a", "defects": [box], "provenance": {"annotated": False}})
    with pytest.raises(RecordError, match="cannot hold defects"):
        ImageRecord("a", [defect([1, 2, 3, 4], description="x")], annotated=False).validate()


def test_reader_points_at_file_and_line(tmp_path):
    p = tmp_path / "gt.jsonl"
    p.write_text(json.dumps(_rec()) + "\n\n" + json.dumps(_rec(image_id="b", split="dev")) + "\n")
    with pytest.raises(InputError, match=r"gt.jsonl:3: record 'b' field 'split'"):
        read_records(p)
    p.write_text(json.dumps(_rec()) + "\n" + json.dumps(_rec()) + "\n")
    with pytest.raises(InputError, match=r"gt.jsonl:2: record 'img-1' field 'image_id': duplicate of line 1"):
        read_records(p)
    p.write_text("{not json\n")
    with pytest.raises(InputError, match=r"gt.jsonl:1: not valid JSON"):
        read_records(p)
    with pytest.raises(InputError, match="no such file"):
        read_records(tmp_path / "missing.jsonl")


def test_require_names_missing_stage_fields():
    rec = ImageRecord.from_json(_rec())
    with pytest.raises(RecordError, match="'caption': missing"):
        rec.require("image_id", "caption")


def test_write_read_round_trip(tmp_path):
    recs = read_records(DEMO / "gt.jsonl")
    write_records(tmp_path / "x.jsonl", recs)
    assert [r.to_json() for r in read_records(tmp_path / "x.jsonl")] == [r.to_json() for r in recs]


def test_schema_1_0_files_still_read():
    rec = ImageRecord.from_json({"schema_version": "1.0", "image_id": "a", "defects": []})
    assert rec.schema_version == "1.0" and rec.think is None


def test_box_shift_clamps_and_keeps_order():
    from sdg_data.boxes import Box

    assert Box(10, 20, 30, 40).shifted([-5, 3, 2, -1]).to_grid() == [5, 23, 32, 39]
    assert Box(0, 0, 1000, 1000).shifted([-10, -10, 10, 10]).to_grid() == [0, 0, 1000, 1000]
    assert Box(100, 100, 105, 105).shifted([10, 0, -10, 0]).to_grid() == [95, 100, 110, 105]  # crossed: swapped
    assert Box(995, 0, 1000, 5).shifted([10, 0, 0, 0]).to_grid() == [999, 0, 1000, 5]  # collapsed at the edge
