"""``datasets.load_dataset`` reads what the folder holds: rebuilds, same-named folders, empty splits, crashes."""

import json

import pytest
from typer.testing import CliRunner

from distill.config import DistillConfig
from distill.runner import distill_file
from sdg_data.cli import app
from sdg_data.dataset import build as build_mod
from sdg_data.dataset.build import BuildConfig, build_dataset
from sdg_data.io.files import write_records
from sdg_data.io.jsonl import read_records
from tests.conftest import DEMO


runner = CliRunner()


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    root = tmp_path_factory.mktemp("loads")
    distill_file(DEMO / "sample" / "records.jsonl", root / "distill", DistillConfig(progress=False))
    recs = read_records(root / "distill" / "distilled.jsonl")
    for r in recs:  # the tests write these records elsewhere: make their image paths independent of the folder
        r.image_path = str((root / "distill" / r.image_path).resolve())
    return recs


def _write(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    write_records(folder / "d.jsonl", records)
    return folder / "d.jsonl"


def _build(src, out, **kw):
    kw.setdefault("test_fraction", 0.33)
    return build_dataset(src, out, BuildConfig(image_roots=[str(DEMO)], **kw), progress=False)


def _ids(ds_dir, cache, config="annotations", split="train"):
    from datasets import load_dataset

    ds = load_dataset(str(ds_dir), config, split=split, cache_dir=str(cache))
    return sorted(ds["image_id"])


def test_same_named_folders_and_rebuilds_load_their_own_rows(distilled, tmp_path):
    cache = tmp_path / "hf-cache"  # one cache for every load, as on a user's machine
    first, second = distilled[:12], distilled[12:]
    a = _build(_write(tmp_path / "a", first), tmp_path / "a" / "dataset")
    b = _build(_write(tmp_path / "b", second), tmp_path / "b" / "dataset")
    assert a["fingerprint"] != b["fingerprint"]
    want_a = sorted(r.image_id for r in first if r.split == "train" or r.split is None)
    got_a = _ids(tmp_path / "a" / "dataset", cache) + _ids(tmp_path / "a" / "dataset", cache, split="test")
    got_b = _ids(tmp_path / "b" / "dataset", cache) + _ids(tmp_path / "b" / "dataset", cache, split="test")
    assert sorted(got_a) == sorted(r.image_id for r in first) and want_a
    assert sorted(got_b) == sorted(r.image_id for r in second)
    # a rebuild in place with other records: the next load sees them, not the cached rows of the first build
    _build(_write(tmp_path / "a", second), tmp_path / "a" / "dataset")
    got = _ids(tmp_path / "a" / "dataset", cache) + _ids(tmp_path / "a" / "dataset", cache, split="test")
    assert sorted(got) == sorted(r.image_id for r in second)
    shards = sorted(p.name for p in (tmp_path / "a" / "dataset" / "data").rglob("*.parquet"))
    assert shards and all(b["fingerprint"] in name for name in shards)  # the first build's shards are gone


def test_a_crashed_rebuild_leaves_the_previous_dataset_readable(distilled, tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    out = tmp_path / "ds"
    _build(_write(tmp_path / "one", distilled[:12]), out)
    before = _ids(out, cache) + _ids(out, cache, split="test")

    real = build_mod.write_text

    def crash_on_card(path, text):
        if path.name == "README.md":
            raise OSError("disk full (simulated)")
        return real(path, text)

    monkeypatch.setattr(build_mod, "write_text", crash_on_card)
    with pytest.raises(OSError, match="disk full"):
        _build(_write(tmp_path / "two", distilled[12:]), out)
    monkeypatch.undo()
    after = _ids(out, cache / "fresh") + _ids(out, cache / "fresh", split="test")
    assert after == before  # the old card still names the old shards, which are intact


def test_an_empty_split_is_left_out_of_the_card(distilled, tmp_path):
    recs = [r for r in distilled]
    for r in recs:
        r.split = "train"
    res = runner.invoke(
        app,
        ["build", str(_write(tmp_path, recs)), "--out", str(tmp_path / "ds"), "--image-root", str(DEMO)],
    )
    assert res.exit_code == 0, res.output
    assert "warning:" in res.output and "has no 'test' rows" in res.output
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "config_name: test" not in card and "split: test" not in card
    from datasets import load_dataset

    ds = load_dataset(str(tmp_path / "ds"), "annotations", cache_dir=str(tmp_path / "c"))
    assert list(ds) == ["train"] and len(ds["train"]) == len(recs)


def test_split_from_says_which_split_wins(distilled, tmp_path):
    recs = list(distilled)
    for r in recs:
        r.split = "train"  # as if generate had put every prompt in train
    src = _write(tmp_path, recs)
    kept = _build(src, tmp_path / "kept", test_fraction=0.5)
    assert kept["splits"] == {"train": len(recs)}
    assert any("--split-from fraction" in w for w in kept["warnings"])
    resplit = _build(src, tmp_path / "resplit", test_fraction=0.5, split_from="fraction")
    assert resplit["splits"]["test"] >= len(recs) // 3 and not resplit["warnings"]
    res = runner.invoke(
        app,
        ["build", str(src), "--out", str(tmp_path / "cli"), "--image-root", str(DEMO), "--test-fraction", "0.5",
         "--split-from", "fraction"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "cli" / "meta" / "build.summary.json").read_text())["splits"]["test"] > 0


def test_build_of_zero_records_is_an_error(distilled, tmp_path):
    recs = list(distilled[:3])
    for r in recs:
        r.image_path = "../../nowhere.png"
    res = runner.invoke(app, ["build", str(_write(tmp_path, recs)), "--out", str(tmp_path / "ds")])
    assert res.exit_code == 2 and "built 0 of 3 records" in res.output, res.output
    assert not (tmp_path / "ds" / "README.md").exists()
