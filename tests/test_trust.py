"""Scores a researcher can trust: every score says what it was computed on and never scores another split in the
place of the one asked for; one reading of the boxes in every score; comparisons and prediction values never
silently misread. Each case through the CLI, as a user meets it."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sdg_data.cli import app
from sdg_data.records import ImageRecord
from tests.conftest import DEMO, defect, noise_png


runner = CliRunner()


def sdg(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _records(tmp_path: Path, n: int, split: str | None = None, name: str = "d.jsonl") -> Path:
    """``n`` annotated records with noise images and one defect each (no split field unless given)."""
    (tmp_path / "img").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        noise_png(tmp_path / "img" / f"{i}.png", i, 64)
        rec = ImageRecord(f"r{i}", [defect([100, 100, 400, 500], "artifact", "six fingers on the hand", 60)],
                          image_path=f"img/{i}.png", width=64, height=64, caption=f"prompt number {i}",
                          generator="g", split=split, think="### Step 1: a\n### Step 2: b\n### Step 3: c")  # fmt: skip
        rows.append(json.dumps(rec.to_json()))
    path = tmp_path / name
    path.write_text("\n".join(rows) + "\n")
    return path


def _preds(tmp_path: Path, ids, name="pred.jsonl", box=(100, 100, 400, 500), **item) -> Path:
    d = {"box_2d": list(box), "label": "artifact", "description": "six fingers on the hand", "importance": 60}
    path = tmp_path / name
    path.write_text("".join(json.dumps({"image_id": i, "defects": [{**d, **item}]}) + "\n" for i in ids))
    return path


@pytest.fixture(scope="module")
def tiny_ds(tmp_path_factory):
    """A 4-image dataset: too few for a test split at the default fraction. The build's output and the folder."""
    root = tmp_path_factory.mktemp("tiny-ds")
    res = sdg("build", _records(root, 4), "--out", root / "ds")
    assert res.exit_code == 0, res.output
    return res.output, root


# ------------------------------------------------------------------ 1. a score names what it scored
def test_build_says_last_that_the_dataset_has_no_test_split_and_the_card_too(tiny_ds):
    output, root = tiny_ds
    last = output.strip().splitlines()[-1]
    assert last.startswith("warning: the dataset has no test split") and "--split train" in last
    card = (root / "ds" / "README.md").read_text()
    assert "**No test split.**" in card


def test_eval_refuses_a_dataset_without_a_test_split_instead_of_scoring_training_images(tiny_ds):
    _, root = tiny_ds
    pred = _preds(root, [f"r{i}" for i in range(4)])
    res = sdg("eval", "--gt", root / "ds", "--pred", pred, "--embedder", "none")
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert len(line.splitlines()) == 1 and "has no 'test' split" in line
    assert "train (4 images)" in line and "--split train or --split all" in line
    res = sdg("reward", "--gt", root / "ds", "--pred", pred, "--out", root / "rw.jsonl", "--embedder", "none")
    assert res.exit_code == 2 and "has no 'test' split" in res.output, res.output


def test_detect_and_refine_refuse_the_same_folder_with_the_same_words(tiny_ds):
    from sdg_data.io.arrow import SplitError
    from train.detector.detect import DetectConfig, read_inputs
    from train.refine import RefineConfig, read_jobs

    _, root = tiny_ds
    with pytest.raises(SplitError, match="has no 'test' split"):
        read_inputs(root / "ds", DetectConfig())
    with pytest.raises(SplitError, match="has no 'test' split"):
        read_jobs(root / "ds", RefineConfig(backend="dry-run"))
    assert len(read_inputs(root / "ds", DetectConfig(split="train")).items) == 4
    assert len(read_jobs(root / "ds", RefineConfig(backend="dry-run", split="all"))[0]) == 4


def test_a_named_split_is_scored_and_the_report_says_which(tiny_ds, tmp_path):
    _, root = tiny_ds
    pred = _preds(root, [f"r{i}" for i in range(4)])
    out = tmp_path / "r.json"
    res = sdg("eval", "--gt", root / "ds", "--pred", pred, "--split", "train", "--embedder", "none", "--out", out)
    assert res.exit_code == 0, res.output
    heading = res.output.splitlines()[0]
    assert heading.startswith(f"ground truth: {root / 'ds'} (dataset, split 'train', build ") and "4 images" in heading
    gt = json.loads(out.read_text())["ground_truth"]
    build_fp = json.loads((root / "ds" / "meta" / "build.summary.json").read_text())["fingerprint"]
    assert gt["split"] == "train" and gt["kind"] == "dataset" and gt["images"] == 4
    assert gt["fingerprint"] == f"build:{build_fp}" and gt["path"] == str(root / "ds")
    res = sdg("eval", "--gt", root / "ds", "--pred", pred, "--split", "everything", "--embedder", "none")
    assert res.exit_code == 2 and "split must be one of ('test', 'train', 'all')" in res.output


def test_a_records_file_is_scored_whole_and_its_digest_recorded(tmp_path):
    out = tmp_path / "r.json"
    res = sdg("eval", "--gt", DEMO / "gt.jsonl", "--pred", DEMO / "pred.jsonl", "--embedder", "none", "--out", out)
    assert res.exit_code == 0, res.output
    gt = json.loads(out.read_text())["ground_truth"]
    import hashlib

    assert gt["fingerprint"] == "sha256:" + hashlib.sha256((DEMO / "gt.jsonl").read_bytes()).hexdigest()
    assert gt["split"] is None and gt["kind"] == "jsonl" and gt["images"] == gt["records_read"] == 8


# ------------------------------------------------------------------ 2. not annotated is not clean (the scores)
def test_unannotated_ground_truth_is_set_aside_with_its_reason(tmp_path):
    gt = tmp_path / "gt.jsonl"
    rows = [json.loads(x) for x in (DEMO / "gt.jsonl").read_text().splitlines()]
    rows[0] = {**rows[0], "defects": None}  # not annotated yet
    gt.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "r.json"
    res = sdg("eval", "--gt", gt, "--pred", DEMO / "pred.jsonl", "--embedder", "none", "--out", out)
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["counts"]["images"] == 7 and report["ground_truth"]["not_annotated"] == 1
    p = report["predictions"]  # its prediction is not scored against "clean", and counted as what it is
    assert p["unknown_image_ids"] == 0 and p["not_annotated_predictions"] == 1
    assert report["ground_truth"]["rejects_file"] == "r.gt-left-out.jsonl"
    rejects = [json.loads(x) for x in (tmp_path / report["ground_truth"]["rejects_file"]).read_text().splitlines()]
    assert rejects[0]["image_id"] == rows[0]["image_id"] and "not annotated" in rejects[0]["reason"]
    assert "1 not annotated, left out" in res.output.splitlines()[0]
    res = sdg(
        "reward", "--gt", gt, "--pred", DEMO / "pred.jsonl", "--out", tmp_path / "rw.jsonl", "--embedder", "none"
    )
    assert res.exit_code == 0, res.output
    assert "1 predictions for images not annotated (not scored)" in res.output
    summary = json.loads((tmp_path / "rw.summary.json").read_text())
    assert summary["completions"] == 7 and summary["not_annotated_predictions"] == 1


# ------------------------------------------------------------------ 3. one reading of the boxes
def test_sdg_eval_and_coco_ap_agree_on_a_pair_near_the_threshold(tmp_path):
    """A ground-truth box at fractional corners (as Label Studio gives them) and a prediction at IoU 0.498 on the
    raw corners, 0.5 on the grid every file stores: both scores count it, or neither would."""
    gt = tmp_path / "gt.jsonl"
    box = {"box_2d": [0, 0, 100.4, 100], "label": "artifact", "description": "melted edge", "importance": 50}
    gt.write_text(json.dumps({"image_id": "a", "defects": [box]}) + "\n")
    pred = _preds(tmp_path, ["a"], box=(0, 0, 100, 50))
    out = tmp_path / "r.json"
    res = sdg("eval", "--gt", gt, "--pred", pred, "--embedder", "none", "--out", out)
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["artifact"]["BoxF1@0.5"] == 1.0
    assert report["ap"]["coco"]["artifact"]["AP50"] == pytest.approx(1.0)
    assert report["counts"]["artifact"]["matched@0.5"] == 1


# ------------------------------------------------------------------ 4. comparisons never silently misread
@pytest.fixture
def two_reports(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for out in (a, b):
        res = sdg("eval", "--gt", DEMO / "gt.jsonl", "--pred", DEMO / "pred.jsonl", "--embedder", "none", "--no-ap",
                  "--out", out)  # fmt: skip
        assert res.exit_code == 0, res.output
    return a, b


def _rewrite_sums(report: Path, digest: bool = True, **changes):
    """Rewrite a report's per-image file; with ``digest`` the report's digest follows (a consistent forgery, to
    reach the checks behind the digest), else the report keeps the old one."""
    import hashlib

    r = json.loads(report.read_text())
    side = report.with_name(r["per_image_file"])
    with np.load(side) as z:
        got = {k: z[k] for k in z.files}
    got.update(changes)
    with side.open("wb") as f:
        np.savez(f, **got)
    if digest:
        r["per_image_sha256"] = "sha256:" + hashlib.sha256(side.read_bytes()).hexdigest()
        report.write_text(json.dumps(r))
    return got


def test_compare_matches_labels_by_name(two_reports):
    a, b = two_reports
    got = _rewrite_sums(b)
    _rewrite_sums(b, labels=got["labels"][::-1], sums=got["sums"][:, ::-1])  # the same run, labels stored reversed
    res = sdg("compare", a, b, "--draws", 50, "--out", a.with_name("cmp.json"))
    assert res.exit_code == 0, res.output
    metrics = json.loads(a.with_name("cmp.json").read_text())["metrics"]
    assert len(metrics) == 12 and all(m["diff"] in (0.0, None) for m in metrics.values())  # by position: not 0
    assert any(m["diff"] == 0.0 for m in metrics.values())
    assert "both scored on the ground truth:" in res.output and "interval excludes 0" not in res.output


@pytest.mark.parametrize(
    "change, field, words",
    [
        ("dup", "image_ids", "appears more than once"),
        ("nan", "sums", "NaN"),
        ("shape", "sums", "must be numbers of shape"),
        ("fraction", "sums", "not whole numbers"),
        ("has_cos", "has_cos", "must be one true or false"),
        ("labels", "labels", "do not match"),
    ],
)
def test_compare_refuses_what_does_not_line_up_in_one_line(two_reports, change, field, words):
    a, b = two_reports
    got = _rewrite_sums(b)
    if change == "dup":
        ids = got["image_ids"].copy()
        ids[1] = ids[0]
        _rewrite_sums(b, image_ids=ids)
    elif change == "nan":
        sums = got["sums"].astype(float)
        sums[2, 0, 0] = np.nan
        _rewrite_sums(b, sums=sums)
    elif change == "shape":
        _rewrite_sums(b, sums=got["sums"][:, :, :5])
    elif change == "fraction":
        sums = got["sums"].astype(float)
        sums[0, 0, 0] = 0.5
        _rewrite_sums(b, sums=sums)
    elif change == "has_cos":
        _rewrite_sums(b, has_cos=np.asarray("yes"))
    else:
        _rewrite_sums(b, labels=np.asarray(["artifact", "blur"]))
    res = sdg("compare", a, b, "--draws", 10)
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1 and f"field {field!r}" in res.output and words in res.output


def test_compare_refuses_a_per_image_file_that_is_not_the_reports_own(two_reports, tmp_path):
    a, b = two_reports
    got = _rewrite_sums(b, digest=False)
    _rewrite_sums(b, digest=False, sums=got["sums"] * 0)
    res = sdg("compare", a, b, "--draws", 10)
    assert res.exit_code == 2 and "is not the file this report was written with" in res.output, res.output
    # a report borrowing another's per-image file
    r = json.loads(a.read_text())
    r["per_image_file"] = json.loads(b.read_text())["per_image_file"]
    borrowed = a.with_name("borrowed.json")
    borrowed.write_text(json.dumps(r))
    res = sdg("compare", a, borrowed, "--draws", 10)
    assert res.exit_code == 2 and "is not the file this report was written with" in res.output, res.output
    # a garbage file, and a link
    side = a.with_name(json.loads(a.read_text())["per_image_file"])
    side.write_bytes(b"not a zip")
    r = json.loads(a.read_text())
    r.pop("per_image_sha256")
    a.write_text(json.dumps(r))
    res = sdg("compare", a, b, "--draws", 10)
    assert res.exit_code == 2 and "not a per-image file" in res.output, res.output
    (tmp_path / "elsewhere.npz").write_bytes(side.read_bytes())
    side.unlink()
    side.symlink_to(tmp_path / "elsewhere.npz")
    res = sdg("compare", a, b, "--draws", 10)
    assert res.exit_code == 2 and "is not a regular file" in res.output, res.output


def test_compare_refuses_reports_scored_with_different_settings_unless_asked(two_reports, tmp_path):
    a, _ = two_reports
    g = tmp_path / "g.json"
    res = sdg("eval", "--gt", DEMO / "gt.jsonl", "--pred", DEMO / "pred.jsonl", "--embedder", "none", "--no-ap",
              "--match", "greedy", "--out", g)  # fmt: skip
    assert res.exit_code == 0, res.output
    res = sdg("compare", a, g, "--draws", 10)
    assert res.exit_code == 2 and "different settings (match 'hungarian' vs 'greedy')" in res.output, res.output
    res = sdg("compare", a, g, "--draws", 10, "--allow-different-settings")
    assert res.exit_code == 0 and "NOT the same scoring settings" in res.output, res.output


def test_compare_refuses_a_report_that_is_not_one_and_a_missing_file(two_reports, tmp_path):
    a, _ = two_reports
    bad = tmp_path / "list.json"
    bad.write_text("[1, 2]")
    res = sdg("compare", a, bad)
    assert res.exit_code == 2 and "list.json: field '<report>': must be an object" in res.output
    res = sdg("compare", a, tmp_path / "nosuch.json")
    assert res.exit_code == 2 and res.output.strip() == f"error: {tmp_path / 'nosuch.json'}: no such file"


def test_compare_refuses_different_ground_truth_unless_asked_and_then_says_so(two_reports, tmp_path):
    a, _ = two_reports
    gt = tmp_path / "gt7.jsonl"
    gt.write_text("".join((DEMO / "gt.jsonl").read_text().splitlines(keepends=True)[:7]))
    c = tmp_path / "c.json"
    res = sdg("eval", "--gt", gt, "--pred", DEMO / "pred.jsonl", "--embedder", "none", "--no-ap", "--out", c)
    assert res.exit_code == 0, res.output
    res = sdg("compare", a, c, "--draws", 10)
    assert res.exit_code == 2 and "not scored on the same ground truth" in res.output
    assert "--allow-different-gt" in res.output
    res = sdg("compare", a, c, "--draws", 10, "--allow-different-gt", "--out", tmp_path / "cmp.json")
    assert res.exit_code == 0, res.output
    assert "NOT the same ground truth (compared on request)" in res.output
    assert "left out: 1 images only A scored, 0 only B scored" in res.output
    assert json.loads((tmp_path / "cmp.json").read_text())["ground_truth"]["differs"]


def test_compare_refuses_different_splits_of_one_dataset(tiny_ds, tmp_path):
    _, root = tiny_ds
    pred = _preds(tmp_path, [f"r{i}" for i in range(4)])
    for split in ("train", "all"):
        res = sdg("eval", "--gt", root / "ds", "--pred", pred, "--split", split, "--embedder", "none", "--no-ap",
                  "--out", tmp_path / f"{split}.json")  # fmt: skip
        assert res.exit_code == 0, res.output
    res = sdg("compare", tmp_path / "train.json", tmp_path / "all.json", "--draws", 10)
    assert res.exit_code == 2 and "A scored split 'train'" in res.output and "B split 'all'" in res.output


def test_prediction_values_the_contract_refuses_are_counted_and_reported(tmp_path):
    rows = [
        {"image_id": "demo-0001", "defects": [{"box_2d": [1, 2, 300, 400], "label": "artifact", "description": 5,
                                               "importance": "50"}]},
        {"image_id": "demo-0002", "defects": [{"box_2d": [1, 2, 300, 400], "label": "Artifact ",
                                               "description": "x", "importance": 50.5}]},
        {"image_id": "demo-0003", "defects": [{"box_2d": [1, 2, 300, 400], "label": "artifact",
                                               "description": "x", "importance": 50.0}]},  # an integer: no change
    ]  # fmt: skip
    pred = tmp_path / "p.jsonl"
    pred.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "r.json"
    res = sdg("eval", "--gt", DEMO / "gt.jsonl", "--pred", pred, "--embedder", "none", "--no-ap", "--out", out)
    assert res.exit_code == 0, res.output
    p = json.loads(out.read_text())["predictions"]
    assert p["coercions"] == 4  # "50" -> 50, 5 -> "5", "Artifact " -> artifact, 50.5 -> 51 (50.0 is none)
    said = " ".join(x for e in p["coercion_examples"] for x in e["issues"])
    assert "importance '50' is text, coerced to 50" in said and "description 5 is not text" in said
    assert "importance 50.5 is not an integer, rounded to 51" in said and "label 'Artifact ' coerced" in said
    assert "4 values coerced" in res.output and "coerced (first, line 1, 'demo-0001')" in res.output
    res = sdg(
        "reward", "--gt", DEMO / "gt.jsonl", "--pred", pred, "--out", tmp_path / "rw.jsonl", "--embedder", "none"
    )
    assert res.exit_code == 0 and "4 values coerced" in res.output, res.output
    summary = json.loads((tmp_path / "rw.summary.json").read_text())
    assert summary["coercions"] == 4 and summary["ground_truth"]["images"] == 8


def test_agreement_leaves_out_records_not_annotated(tmp_path):
    box = {"box_2d": [100, 100, 400, 400], "label": "artifact", "description": "six fingers", "importance": 50}
    rows = [{"image_id": i, "defects": [box], "provenance": {"annotator": who}} for i in ("a", "b") for who in "xy"]
    rows.append({"image_id": "c", "defects": None, "provenance": {"annotator": "x"}})  # opened, never submitted
    rows.append({"image_id": "c", "defects": [], "provenance": {"annotator": "y"}})
    path = tmp_path / "records.all.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from annotation.agreement import agreement_file

    report = agreement_file(path)
    assert report["ground_truth"]["not_annotated"] == 1 and report["ground_truth"]["records_read"] == 6
    pair = next(iter(report["pairs"].values()))
    assert pair["images"] == 2  # image c is not compared as "x saw it clean"
    res = sdg("annotate", "agreement", path)
    assert res.exit_code == 0 and "1 records not annotated yet were left out" in res.output, res.output


def test_a_split_given_for_a_records_file_keeps_only_its_records(tmp_path):
    rows = [json.loads(x) for x in (DEMO / "gt.jsonl").read_text().splitlines()]
    for r in rows[:3]:
        r["split"] = "train"
    gt = tmp_path / "gt.jsonl"
    gt.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "r.json"
    res = sdg("eval", "--gt", gt, "--pred", DEMO / "pred.jsonl", "--embedder", "none", "--no-ap", "--out", out)
    assert res.exit_code == 0, res.output  # unset: the whole file, and the heading says its splits were mixed
    assert "its records' splits (test 5, train 3) all scored: --split test keeps the held-out ones" in res.output
    res = sdg("eval", "--gt", gt, "--pred", DEMO / "pred.jsonl", "--embedder", "none", "--no-ap", "--split", "test",
              "--out", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["counts"]["images"] == 5 and report["ground_truth"]["split"] == "test"
    assert report["predictions"]["unknown_image_ids"] == 3  # the training images' predictions are not scored
    res = sdg("eval", "--gt", DEMO / "gt.jsonl", "--pred", DEMO / "pred.jsonl", "--embedder", "none",
              "--split", "train")  # fmt: skip
    assert res.exit_code == 2 and "no record has split 'train' (its records' splits: test (8))" in res.output


def test_not_annotated_records_are_never_exported_or_edited_or_averaged_as_clean(tmp_path):
    rows = [json.loads(x) for x in (DEMO / "sample" / "records.jsonl").read_text().splitlines()][:4]
    rows[0]["defects"] = None
    for r in rows:
        r["image_path"] = str(DEMO / "sample" / r["image_path"])
    recs = tmp_path / "r.jsonl"
    recs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    root = ["--image-root", DEMO / "sample"]
    res = sdg("export", "coco", recs, "--out", tmp_path / "coco" / "c.json", *root)
    assert res.exit_code == 0 and "exported 3 images" in res.output and "rejected 1" in res.output, res.output
    coco = json.loads((tmp_path / "coco" / "c.json").read_text())
    assert rows[0]["image_id"] not in {im["sdg_image_id"] for im in coco["images"]}
    res = sdg("refine", recs, "--out", tmp_path / "ref", "--backend", "dry-run", *root)
    assert res.exit_code == 0 and "not annotated skipped 1" in res.output, res.output
    from sdg_data.dataset.stats import dataset_stats

    s = dataset_stats(recs)
    assert s["composition"]["not annotated"] == 1 and s["composition"]["clean"] == 0
    gen = rows[0]["generator"]  # every sample image of this generator; the not-annotated one is left out
    assert all(r["generator"] == gen for r in rows)
    per_image = [len([d for d in r["defects"] if d["label"] == "artifact"]) for r in rows[1:]]
    assert s["by_generator"][gen]["artifact_per_image"] == round(sum(per_image) / 3, 3)
    assert s["by_generator"][gen]["images"] == 4


def test_a_box_outside_the_image_is_a_counted_coercion():
    from sdg_data.answer import parse_defect_list

    res = parse_defect_list([{"box_2d": [1100, 1100, 1200, 1200], "label": "artifact", "description": "x"}])
    assert res.defects == [] and res.coercions == 1 and "lies outside the image, dropped" in res.issues[0]
