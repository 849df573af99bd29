import json

from typer.testing import CliRunner

from sdg_data.cli import app
from sdg_data.interop.sdg30k import ImportConfig, image_id_for, import_sdg30k
from sdg_data.io.jsonl import read_records


def released_rows():
    """Rows shaped like the release: raw per-type boxes in yxyx, translated boxes in xyxy."""
    return [
        {
            "filepath": "images/flux2/000001.png",
            "caption": "a cat",
            "generator": "FLUX.2-dev",
            "artifact_bboxes": [{"box_2d": [200, 100, 400, 300], "desc": "耳朵重复"}],
            "misalignment_bboxes": [],
            "ann_response": "<think>x</think><answer>[]</answer>",
            "ann_translated_bboxes": [
                {
                    "box_2d": [100, 200, 300, 400],
                    "label": "artifact",
                    "description": "The cat's ear is doubled.",
                    "importance": 55,
                }
            ],
        },
        {
            "filepath": "images/sana/000001.png",
            "caption": "a dog",
            "generator": "SANA-1.5-1.6B",
            "artifact_bboxes": [],
            "misalignment_bboxes": [[100, 50, 300, 250]],
            "ann_translated_bboxes": [
                {
                    "box_2d": [50, 100, 250, 300],
                    "label": "misalignment",
                    "description": "The dog is missing its hat.",
                    "importance": 40,
                }
            ],
        },
        {
            "filepath": "images/zimage/000002.png",
            "caption": "a tree",
            "generator": "Z-Image-Turbo",
            "artifact_bboxes": [{"box_2d": [0, 0, 10, 10], "label": "no-problem"}],
            "misalignment_bboxes": [],
        },
        {
            "filepath": "images/zimage/000003.png",
            "caption": "a car",
            "generator": "Z-Image-Turbo",
            "ann_translated_bboxes": [{"box_2d": [300, 200, 100, 400], "label": "artifact", "description": "x"}],
        },
        {"caption": "no path"},
    ]


def write(tmp_path, rows, name="test.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return p


def test_import_translated_and_raw_with_rejects(tmp_path):
    src = write(tmp_path, released_rows())
    stats, agree = import_sdg30k(src, tmp_path / "out.jsonl")
    assert (stats.read, stats.kept, stats.rejected) == (5, 3, 2)
    recs = {r.image_id: r for r in read_records(tmp_path / "out.jsonl")}
    cat = recs[image_id_for("images/flux2/000001.png")]
    assert cat.split == "test" and cat.defects[0].box.to_grid() == [100, 200, 300, 400]
    assert cat.defects[0].importance == 55 and cat.provenance["teacher_response"].startswith("<think>")
    tree = recs[image_id_for("images/zimage/000002.png")]
    assert tree.defects == [] and stats.extras["placeholders_dropped"] == 1 and stats.extras["clean"] == 1
    rejects = [json.loads(x) for x in (tmp_path / "out.import.rejects.jsonl").read_text().splitlines()]
    assert "inverted" in rejects[0]["reason"] and "'filepath'" in rejects[1]["reason"]
    # raw boxes read as yxyx coincide with the translated xyxy boxes; read as xyxy they do not
    assert agree["images"] == 2
    assert agree["mean_iou_raw_as_yxyx"] == 1.0 and agree["mean_iou_raw_as_xyxy"] < 0.5


def test_raw_source_uses_the_explicit_order(tmp_path):
    src = write(tmp_path, released_rows()[:2], "train.jsonl")
    import_sdg30k(src, tmp_path / "yx.jsonl", cfg=ImportConfig(source="raw", raw_order="yxyx"))
    import_sdg30k(src, tmp_path / "xy.jsonl", cfg=ImportConfig(source="raw", raw_order="xyxy"))
    yx, xy = read_records(tmp_path / "yx.jsonl"), read_records(tmp_path / "xy.jsonl")
    assert yx[0].defects[0].box.to_grid() == [100, 200, 300, 400] and yx[0].split == "train"
    assert xy[0].defects[0].box.to_grid() == [200, 100, 400, 300]
    assert yx[0].defects[0].description == "耳朵重复" and yx[0].provenance["box_order"] == "yxyx"
    # row 2's raw field holds a bare box: no description, so no SDG defect (the same rule as validate and pull)
    assert len(yx) == 1
    (rej,) = [json.loads(x) for x in (tmp_path / "yx.import.rejects.jsonl").read_text().splitlines()]
    assert "description" in rej["reason"] and "--source translated" in rej["reason"]


def test_cli(tmp_path):
    src = write(tmp_path, released_rows())
    res = CliRunner().invoke(app, ["import-sdg30k", str(src), "--out", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 0, res.output
    assert "read 5: wrote 3 (1 clean), rejected 2" in res.output and "raw box order check on 2 images" in res.output
