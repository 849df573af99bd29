"""sdg build: the four configs load offline with datasets, splits are prompt-disjoint, images are stored once."""

import json
from pathlib import Path

import pytest

from distill.config import DistillConfig
from distill.runner import distill_file
from sdg_data.answer import parse_response
from sdg_data.dataset.build import BuildConfig, build_dataset
from sdg_data.dataset.jitter import JitterConfig, jittered_defects
from sdg_data.io.files import write_records
from sdg_data.io.jsonl import load_records, read_records
from sdg_data.records import ImageRecord
from tests.conftest import DEMO, defect, noise_records


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    distill_file(DEMO / "sample" / "records.jsonl", root / "distill", DistillConfig(progress=False))
    summary = build_dataset(
        root / "distill" / "distilled.jsonl",
        root / "ds",
        BuildConfig(test_fraction=0.33, image_roots=[str(DEMO)]),
        progress=False,
    )
    return root, summary


def test_configs_load_offline_with_expected_rows(built):
    import datasets

    root, s = built
    ann = datasets.load_dataset(str(root / "ds"), "annotations")
    sft = datasets.load_dataset(str(root / "ds"), "sft", split="train")
    grpo = datasets.load_dataset(str(root / "ds"), "grpo", split="train")
    test = datasets.load_dataset(str(root / "ds"), "test", split="test")
    n_train, n_test = len(ann["train"]), len(ann["test"])
    assert n_train + n_test == 24 and n_test == len(test) > 0
    assert len(sft) == 3 * n_train and len(grpo) == n_train and s["rows"]["sft/train"] == len(sft)
    train_caps, test_caps = set(ann["train"]["caption"]), set(ann["test"]["caption"])
    assert not train_caps & test_caps  # prompt-disjoint
    assert ann["train"][0]["images"][0].size == (128, 128)
    # one copy of each image in the whole folder: two tables, and the configs are views of them
    assert sorted(p.parent.name for p in (root / "ds" / "data").rglob("*.parquet")) == ["test", "train"]
    card = (root / "ds" / "README.md").read_text()
    assert card.startswith("---\nlicense: cc-by-nc-4.0") and "config_name: sft" in card


def test_sft_rows_are_trl_conversations_with_jittered_answers(built):
    import datasets

    root, _ = built
    sft = datasets.load_dataset(str(root / "ds"), "sft", split="train")
    recs = {r.image_id: r for r in read_records(root / "distill" / "distilled.jsonl")}
    for row in sft.select(range(9)):
        system, user, assistant = row["messages"]
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        assert user["content"][0]["type"] == "image" and len(row["images"]) == 1
        rec = recs[row["image_id"]]
        assert f'Caption: "{rec.caption}"' in user["content"][1]["text"]
        res = parse_response(assistant["content"][0]["text"])
        assert res.format_ok and res.think == rec.think.strip()
        want, offsets = jittered_defects(rec, row["epoch"], JitterConfig())
        assert [d.box.to_grid() for d in res.defects] == [d.box.to_grid() for d in want]
        assert json.loads(row["pair"])["jitter_offsets"] == offsets


def test_grpo_rows_feed_the_core_reward(built):
    import datasets

    from sdg_data.answer import render_response
    from sdg_data.scoring.reward import SDGReward

    root, _ = built
    grpo = datasets.load_dataset(str(root / "ds"), "grpo", split="train")
    reward = SDGReward(embedder=None)
    gts = grpo["gt_defects"]
    perfect = [
        render_response(
            "### Step 1: ok", [defect(d["box_2d"], d["label"], d["description"], d["importance"]) for d in g]
        )
        for g in gts
    ]
    scores = reward(perfect, gt_defects=gts, prompts=grpo["prompt"])
    for g, r in zip(gts, scores):
        assert r == pytest.approx(0.18 if not g else 0.6 + 0.15)  # no embedder: R_desc is 0
    assert grpo[0]["prompt"][1]["content"][0]["type"] == "image"


def test_test_config_is_what_sdg_eval_reads(built):
    root, _ = built
    recs = load_records(root / "ds")
    from sdg_data.io.arrow import dataset_shards, read_parquet_records

    ann = [r for f in dataset_shards(root / "ds", "annotations") for r in read_parquet_records(f)]
    assert {r.split for r in ann} == {"train", "test"} and len(ann) == 24  # one record per image, not per pair
    assert recs and all(r.split == "test" for r in recs)
    assert {r.image_id for r in recs} == {r.image_id for r in ann if r.split == "test"}  # the held-out images
    from sdg_data.scoring.evaluation import EvalConfig, evaluate_files

    report = evaluate_files(root / "ds", root / "ds", None, EvalConfig(embedder="none"))
    assert report["artifact"]["BoxF1@0.5"] == 1.0 and report["misalignment"]["DetTypeF1"] == 1.0


def test_image_bytes_stored_once_not_once_per_pair(tmp_path):
    s = build_dataset(noise_records(tmp_path), tmp_path / "ds", BuildConfig(), progress=False)
    sft = s["sft"]
    assert sft["unique_image_bytes"] > 12 * 20000  # incompressible images dominate
    assert sft["bytes"] < 1.1 * (sft["unique_image_bytes"] + sft["text_bytes"])  # 3 pairs, one copy
    assert s["size_ratio"] < 1.1  # the whole folder, all four configs: each image once
    assert s["splits"] == {"train": 12}  # given splits are kept
    # any parquet reader sees plain binary image bytes (the dictionary is the file's encoding, not its type), and
    # the file carries the datasets features, so the column is an Image to datasets
    import pyarrow.parquet as pq

    shard = next((tmp_path / "ds" / "data" / "train").glob("*.parquet"))
    schema = pq.read_schema(shard)
    assert schema.field("images").type.value_type.field("bytes").type == "binary"
    assert b"Image" in schema.metadata[b"huggingface"]
    table = pq.read_table(shard, columns=["image_id", "images"])
    by_id = {}
    for row in table.to_pylist():
        by_id.setdefault(row["image_id"], set()).add(row["images"][0]["bytes"])
    assert len(by_id) == 12 and all(len(v) == 1 for v in by_id.values())  # each pair row: its image's bytes
    assert by_id["r3"] == {(tmp_path / "img" / "3.png").read_bytes()}


def test_records_without_think_or_image_are_rejected_and_counted(tmp_path):
    src = read_records(DEMO / "sample" / "records.jsonl")[:3]
    for r in src:
        r.image_path = str(DEMO / "sample" / r.image_path)
        r.think = "### Step 1: a\n### Step 2: b\n### Step 3: c"
    src[1].think = None
    src[2].image_path = "nowhere.png"
    write_records(tmp_path / "d.jsonl", src)
    roots = [str(tmp_path), str(DEMO)]
    s = build_dataset(tmp_path / "d.jsonl", tmp_path / "ds", BuildConfig(image_roots=roots), progress=False)
    assert (s["read"], s["built"], s["rejected"]) == (3, 1, 2)
    rej = [json.loads(x) for x in (tmp_path / "ds" / "meta" / "build.rejects.jsonl").read_text().splitlines()]
    assert "'think'" in rej[0]["reason"] and "'image_path'" in rej[1]["reason"]


def test_cli_pipeline_stats_and_viz(built, tmp_path):
    from typer.testing import CliRunner

    from sdg_data.cli import app

    root, _ = built
    r = CliRunner().invoke(app, ["stats", str(root / "ds"), "--report", str(tmp_path / "rep.html")])
    assert r.exit_code == 0, r.output
    assert "artifact-only" in r.output and "covered by defects" in r.output
    page = (tmp_path / "rep.html").read_text()
    assert page.count("<table") >= 8 and "Gallery" in page and "data:image/jpeg;base64," in page
    assert " src='http" not in page and " src='./" not in page and not (tmp_path / "rep_files").exists()  # one file
    r = CliRunner().invoke(app, ["viz", str(root / "ds"), "--out", str(tmp_path / "viz"), "--limit", "2"])
    assert r.exit_code == 0 and len(list((tmp_path / "viz").glob("*.png"))) == 2
    r = CliRunner().invoke(app, ["build", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "no such file" in r.output


def test_each_row_group_goes_to_disk_when_written_and_the_hint_changes_no_byte(tmp_path, monkeypatch):
    """The build hands every finished row group to the disk (WriteBehind.flush after each, and at each shard's
    close, its descriptor closed); without the hint (a platform without posix_fadvise, or one that refuses it) the
    shards are byte for byte the same."""
    import os

    import pyarrow.parquet as pq

    import sdg_data.dataset.build as build_mod
    from sdg_data.dataset.pagecache import WriteBehind

    records = noise_records(tmp_path, size=320)  # ~300 KB each
    flushes: dict[str, list[int]] = {}
    opened: list[WriteBehind] = []

    class Recording(WriteBehind):
        def __init__(self, path):
            super().__init__(path)
            self.path = Path(path)
            opened.append(self)

        def flush(self):
            flushes.setdefault(self.path.name, []).append(self.path.stat().st_size)
            super().flush()

    monkeypatch.setattr(build_mod, "WriteBehind", Recording)
    cfg = BuildConfig(rows_per_group=4, max_shard_mb=1)  # 12 images: several row groups, and more than one shard
    s = build_dataset(records, tmp_path / "ds", cfg, progress=False)
    shards = sorted((tmp_path / "ds" / "data" / "train").glob("*.parquet"))
    assert len(shards) >= 2 and len(opened) == len(shards)
    assert all(w.fd is None for w in opened)  # every descriptor closed
    groups = sum(pq.ParquetFile(p).num_row_groups for p in shards)
    sizes = [n for v in flushes.values() for n in v]
    assert groups >= 3 and len(sizes) == groups + len(shards)  # one per row group, one at each close
    assert all(b >= a for v in flushes.values() for a, b in zip(v, v[1:]))  # each at a later point of its file
    assert sorted(v[-1] for v in flushes.values()) == sorted(p.stat().st_size for p in shards)  # the last: all

    def refuse(*a):
        raise OSError("not here")

    for patch in (
        lambda: monkeypatch.setattr(os, "posix_fadvise", refuse),
        lambda: monkeypatch.delattr(os, "posix_fadvise"),
    ):
        patch()
        t = build_dataset(records, tmp_path / "other", cfg, progress=False)
        assert t["fingerprint"] == s["fingerprint"]
        again = sorted((tmp_path / "other" / "data" / "train").glob("*.parquet"))
        assert [p.read_bytes() for p in again] == [p.read_bytes() for p in shards]


@pytest.mark.parametrize(("size", "most"), [(1 << 10, 16 + 1), (1 << 20, 8 + 1), (3 << 20, 8 + 1)])
def test_images_read_ahead_stay_bounded_in_count_and_bytes(tmp_path, monkeypatch, size, most):
    """The reader threads stay at most about a row group ahead of the writer: rows_per_group images however small
    they are, max_group_mb of bytes (but at least 8 images) however large; every record comes back once, in order,
    a missing file as its error in its place."""
    import threading

    import sdg_data.dataset.build as build_mod
    from sdg_data.io.images import ImageError

    started: list[int] = []
    lock = threading.Lock()

    def fake_cell(rec, path, max_pixels):
        with lock:
            started.append(int(rec.image_id))
        if not path.exists():
            raise ImageError("cannot be read")
        return {"bytes": b"", "path": path.name, "sha256": b""}

    monkeypatch.setattr(build_mod, "_image_cell", fake_cell)
    loaded = []
    for i in range(60):
        p = tmp_path / f"{i}.png"
        if i != 7:
            p.write_bytes(b"\0" * size)
        loaded.append((i + 1, ImageRecord(str(i), []), p))
    cfg = BuildConfig(workers=2, rows_per_group=16, max_group_mb=4)
    out = []
    for consumed, (line, rec, got) in enumerate(build_mod._prefetched(loaded, cfg)):
        with lock:
            assert len(started) - consumed <= most  # read but not yet handed to the writer
        out.append((line, rec.image_id, isinstance(got, ImageError)))
    assert out == [(i + 1, str(i), i == 7) for i in range(60)]
    assert sorted(started) == list(range(60))


def test_records_sharing_one_image_keep_it_stored_once(tmp_path):
    """Two records whose files hold the same bytes: one dictionary entry (a repeated entry would make pyarrow store
    every pair's image in full), and each row still reads its record's image."""
    import shutil

    import pyarrow.parquet as pq

    records = noise_records(tmp_path, n=6, size=320)
    for i in (1, 2):  # records 0, 1 and 2 now point at three files with one content
        shutil.copyfile(tmp_path / "img" / "0.png", tmp_path / "img" / f"{i}.png")
    distinct = sum((tmp_path / "img" / f"{i}.png").stat().st_size for i in (0, 3, 4, 5))
    s = build_dataset(records, tmp_path / "ds", BuildConfig(), progress=False)
    assert s["built"] == 6 and s["rows"]["sft/train"] == 18
    shard = next((tmp_path / "ds" / "data" / "train").glob("*.parquet"))
    assert shard.stat().st_size < distinct + 200_000  # four images' bytes and the text, not 18 images
    for row in pq.read_table(shard, columns=["image_id", "images"]).to_pylist():
        i = int(row["image_id"][1:])
        assert row["images"][0]["bytes"] == (tmp_path / "img" / f"{i}.png").read_bytes()
        assert row["images"][0]["path"] == f"{i}.png"


def test_data_after_iend_is_not_stored(tmp_path):
    """Bytes after a PNG's IEND are read by no decoder and covered by no check: the dataset stores the image up to
    IEND, and dedupes by those bytes."""
    import pyarrow.parquet as pq

    src = noise_records(tmp_path)
    img = tmp_path / "img" / "3.png"
    clean = img.read_bytes()
    img.write_bytes(clean + b"PAYLOAD after the image: sk-whatever")
    build_dataset(src, tmp_path / "ds", BuildConfig(), progress=False)
    stored = {}
    for shard in (tmp_path / "ds" / "data").glob("*/*.parquet"):
        for row in pq.read_table(shard, columns=["image_id", "images"]).to_pylist():
            stored[row["image_id"]] = row["images"][0]["bytes"]
    assert stored["r3"] == clean and all(b"PAYLOAD" not in b for b in stored.values())
