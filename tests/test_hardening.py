"""A folder from elsewhere can waste nothing and reach nothing: links planted on an output's way, sidecar files
beside an input, and the provenance key. Each class is tested where it lives, at every place it covers."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sdg_data.io.files import OutputError, check_output, output_root, write_json
from tests.conftest import DEMO, noise_records


SDG = str(Path(sys.executable).parent / "sdg")
SAMPLE = DEMO / "sample"


def sdg(*args, cwd=None, timeout=300, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([SDG, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, **(env or {})})  # fmt: skip


def decoy(tmp_path: Path) -> Path:
    """A folder outside every output, with files named like the ones a stage writes, removes or appends to."""
    d = tmp_path / "elsewhere"
    d.mkdir()
    for name in ("distill.summary.json", "distill.rejects.jsonl", "refine.summary.json", "refine.rejects.jsonl",
                 "build.summary.json", "build.rejects.jsonl", "usage.jsonl", "old.parquet",
                 "train-0-00000-of-00001.parquet"):  # fmt: skip
        (d / name).write_text(f"precious {name}\n")
    return d


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def sample_copy(work: Path, n: int = 3) -> tuple[Path, Path]:
    shutil.copytree(SAMPLE / "images", work / "images")
    lines = (SAMPLE / "records.jsonl").read_text().splitlines()[:n]
    good, bad = work / "good.jsonl", work / "bad.jsonl"
    good.write_text("\n".join(lines) + "\n")
    bad.write_text("".join(json.dumps({**json.loads(x), "caption": 5}) + "\n" for x in lines))
    return good, bad


# ------------------------------------------------------------------ 1. nothing written or deleted through a link
def test_check_output_refuses_a_link_on_the_way_but_not_the_root_itself(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "named").symlink_to(real)  # the user named a link: fine
    root = output_root(tmp_path / "named")
    write_json(root / "a" / "b.json", {})
    (root / "c").symlink_to(tmp_path)
    with pytest.raises(OutputError, match="symbolic link inside the output folder"):
        write_json(root / "c" / "d.json", {})
    with pytest.raises(OutputError, match="symbolic link inside the output folder"):
        check_output(root / "c" / "deeper" / "e.json")
    (root / "f").write_text("a file")
    with pytest.raises(OutputError, match="not a folder"):
        write_json(root / "f" / "g.json", {})


def _inputs(work: Path, command: str) -> tuple[Path, Path, list[str]]:
    """A good and a bad input for ``command`` (every record of the bad one rejected), and the output arguments."""
    good, bad = sample_copy(work)
    out = work / "out"
    if command == "import coco":
        coco = {"images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}], "annotations": [],
                "categories": []}  # fmt: skip
        good.write_text(json.dumps(coco))
        bad.write_text(json.dumps({**coco, "images": [{"id": 1, "file_name": "a.png", "width": 0, "height": 10}]}))
        return good, bad, ["import", "coco", "{src}", "--out", str(out / "r.jsonl")]
    if command == "import-sdg30k":
        row = {"filepath": "images/flux/1.png", "caption": "a cat", "generator": "FLUX.2-dev",
               "ann_translated_bboxes": []}  # fmt: skip
        good.write_text(json.dumps(row) + "\n")
        bad.write_text(json.dumps({**row, "filepath": 3}) + "\n")
        return good, bad, ["import-sdg30k", "{src}", "--out", str(out / "r.jsonl")]
    if command == "pull --from-export":
        data = {"image": "/data/local-files/?d=images/demo-00.png", "image_id": "demo-00", "caption": "c"}
        task = {"id": 1, "data": data, "annotations": [{"id": 5, "completed_by": 1, "result": []}]}
        good.write_text(json.dumps([task]))
        bad_ann = {"id": 5, "completed_by": 1, "result": [{"id": "r", "from_name": "nope", "value": {}}]}
        bad.write_text(json.dumps([{**task, "annotations": [bad_ann]}]))
        return good, bad, ["annotate", "pull", "--from-export", "{src}", "--out", str(out / "r.jsonl"),
                           "--image-root", str(work / "images")]  # fmt: skip
    if command == "viz":
        bad.write_text("".join(json.dumps({**json.loads(x), "image_path": "images/missing.png"}) + "\n"
                               for x in good.read_text().splitlines()))  # fmt: skip
        return good, bad, ["viz", "{src}", "--out", str(out)]
    extra = ["--backend", "dry-run"] if command == "refine" else []
    return good, bad, [command, "{src}", "--out", str(out), *extra]


@pytest.mark.parametrize("command", ["distill", "refine", "viz", "import coco", "import-sdg30k", "pull --from-export"])
def test_a_failed_run_link_is_never_written_through_or_cleared_through(tmp_path, command):
    """OUT/failed-run planted as a link, for every stage whose failed runs report there: a failing run's reports
    go to failed-run-1/ (nothing lost, nothing written through the link), and the next good run deletes nothing
    behind it."""
    work = tmp_path / "w"
    work.mkdir()
    good, bad, args = _inputs(work, command)
    target = decoy(tmp_path)
    before = snapshot(target)
    out = work / "out"

    def run(src):
        return sdg(*[a.replace("{src}", str(src)) for a in args], cwd=work)

    first = run(good)
    assert first.returncode == 0, first.stderr
    (out / "failed-run").symlink_to(target)
    res = run(bad)
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert snapshot(target) == before
    assert any(p.name.endswith(".rejects.jsonl") for p in (out / "failed-run-1").iterdir()), sorted(snapshot(out))
    assert run(good).returncode == 0
    assert snapshot(target) == before and (out / "failed-run").is_symlink()


def test_a_build_never_removes_or_writes_shards_through_a_link(tmp_path):
    records = noise_records(tmp_path, n=6)
    out = tmp_path / "ds"
    assert sdg("build", records, "--out", out).returncode == 0
    target = decoy(tmp_path)
    before = snapshot(target)
    (out / "data" / "x").symlink_to(target)  # stale-shard removal used to glob through it
    res = sdg("build", records, "--out", out, "--epochs", "2")
    assert res.returncode == 0, res.stderr
    assert snapshot(target) == before
    # data/train itself a link: the shards would be written elsewhere; refused, nothing there touched
    shutil.rmtree(out / "data" / "train")
    (out / "data" / "train").symlink_to(target)
    res = sdg("build", records, "--out", out)
    assert res.returncode == 2 and "symbolic link inside the output folder" in res.stderr, res.stderr
    assert snapshot(target) == before
    # meta/failed-run planted: a build that keeps nothing writes beside it, not through it
    (out / "data" / "train").unlink()
    (out / "meta" / "failed-run").symlink_to(target)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        "".join(json.dumps({**json.loads(x), "think": None}) + "\n" for x in records.read_text().splitlines())
    )
    res = sdg("build", bad, "--out", out)
    assert res.returncode == 2 and "failed-run-1" in res.stderr, res.stderr
    assert snapshot(target) == before


def test_distill_never_writes_its_cache_or_ledger_through_a_link(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    good, _ = sample_copy(work)
    target = decoy(tmp_path)
    before = snapshot(target)
    out = work / "out"
    out.mkdir()
    (out / "cache").symlink_to(target)
    res = sdg("distill", good, "--out", out)
    assert res.returncode == 2 and "symbolic link inside the output folder" in res.stderr, res.stderr
    assert snapshot(target) == before
    (out / "cache").unlink()
    (out / "cache").mkdir()
    (out / "cache" / "usage.jsonl").symlink_to(target / "usage.jsonl")
    res = sdg("distill", good, "--out", out)
    assert res.returncode == 2 and "symbolic link" in res.stderr, res.stderr
    assert snapshot(target) == before
    # a planted entry link cannot hand in a teacher reply
    (out / "cache" / "usage.jsonl").unlink()
    assert sdg("distill", good, "--out", out).returncode == 0
    entry = next((out / "cache").rglob("*.json"))
    planted = json.loads(entry.read_text())
    planted_file = tmp_path / "planted.json"
    planted_file.write_text(json.dumps({**planted, "think": "PLANTED"}))
    entry.unlink()
    entry.symlink_to(planted_file)
    assert sdg("distill", good, "--out", out).returncode == 0
    assert "PLANTED" not in (out / "distilled.jsonl").read_text()


def test_the_temp_sweep_never_follows_a_link(tmp_path):
    from sdg_data.io.files import sweep_stale_temps

    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / ".x.999999.abc.tmp").write_text("not ours")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(target)
    (out / ".y.999999.abc.tmp").write_text("ours")
    assert sweep_stale_temps(out) == 1
    assert (target / ".x.999999.abc.tmp").exists()


# ------------------------------------------------------------------ 2. sidecars beside an input are untrusted
@pytest.fixture
def distilled(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    good, _ = sample_copy(work, 6)
    assert sdg("distill", good, "--out", work / "dist").returncode == 0
    return work / "dist"


def test_build_copies_only_the_stage_reports_never_a_linked_secret(tmp_path, distilled):
    secret = tmp_path / "credentials"
    secret.write_text("aws_secret_access_key = SECRET-VALUE\n")
    (distilled / "pwn.summary.json").symlink_to(secret)
    (distilled / "pwn2.rejects.jsonl").symlink_to(secret)
    (distilled / "odd.rejects.jsonl").write_text(
        '{"stage": ["a"], "reason": "x"}\nnot json\n{"stage": "s", "reason": "r"}\n'
    )
    out = tmp_path / "ds"
    res = sdg("build", distilled / "distilled.jsonl", "--out", out)
    assert res.returncode == 0, res.stderr
    for p in (out / "meta").iterdir():
        assert "SECRET-VALUE" not in p.read_text(errors="replace"), p
        assert not p.is_symlink()
    assert (out / "meta" / "distill.summary.json").is_file()
    assert [json.loads(x)["reason"] for x in (out / "meta" / "odd.rejects.jsonl").read_text().splitlines()] == ["r"]
    assert json.loads((out / "meta" / "build.summary.json").read_text())["stage_reports"]["skipped_lines"] == 2
    res = sdg("stats", out)  # the odd line used to kill the report (a list as its stage)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "huge"])
@pytest.mark.parametrize("command", ["build", "viz", "stats", "distill", "export", "refine"])
def test_a_sidecar_that_is_a_fifo_a_device_or_huge_is_skipped_in_bounded_time(tmp_path, distilled, kind, command):
    side = distilled / "zz.summary.json"
    if kind == "fifo":
        os.mkfifo(side)
    elif kind == "dev-zero":
        side.symlink_to("/dev/zero")
    else:
        with side.open("wb") as f:
            f.truncate(1 << 31)  # 2 GB, sparse
    args = {"build": ["build", distilled / "distilled.jsonl", "--out", tmp_path / "ds"],
            "viz": ["viz", distilled / "distilled.jsonl", "--out", tmp_path / "viz"],
            "stats": ["stats", distilled / "distilled.jsonl"],
            "distill": ["distill", distilled / "distilled.jsonl", "--out", tmp_path / "again"],
            "export": ["export", "coco", distilled / "distilled.jsonl", "--out", tmp_path / "coco" / "c.json"],
            "refine": ["refine", distilled / "distilled.jsonl", "--out", tmp_path / "ref", "--backend", "dry-run"],
            }[command]  # fmt: skip
    res = sdg(*args, timeout=120)
    assert res.returncode == 0, res.stderr


def test_a_shard_list_cannot_point_outside_its_folder(tmp_path):
    records = noise_records(tmp_path, n=6)
    for name in ("ds", "other"):
        assert sdg("build", records, "--out", tmp_path / name, "--test-images", "2").returncode == 0
    summary_path = tmp_path / "ds" / "meta" / "build.summary.json"
    summary = json.loads(summary_path.read_text())
    other = sorted(str(p) for p in (tmp_path / "other" / "data").rglob("*.parquet"))
    summary["files"] = {c: [*(f"../other/{Path(p).relative_to(tmp_path / 'other')}" for p in other), *other]
                        for c in summary["files"]}  # fmt: skip
    summary_path.write_text(json.dumps(summary))
    from sdg_data.io.arrow import dataset_shards

    assert dataset_shards(tmp_path / "ds", "annotations") == []
    for args in (["stats", tmp_path / "ds"], ["eval", "--gt", tmp_path / "ds", "--pred", tmp_path / "ds"]):
        res = sdg(*args, "--embedder", "none") if args[0] == "eval" else sdg(*args)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr


# ------------------------------------------------------------------ 3. the provenance key
def _key_env(tmp_path) -> dict[str, str]:
    return {"XDG_CACHE_HOME": str(tmp_path / "cache")}


@pytest.mark.parametrize("bad", ["empty", "short", "link", "world-readable", "folder", "hardlink", "zeros", "shared"])
def test_a_key_that_is_not_private_whole_and_ours_vouches_for_nothing(tmp_path, monkeypatch, bad, capsys):
    from sdg_data.io import paths

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    key = tmp_path / "cache" / "sdg" / "provenance.key"
    key.parent.mkdir(parents=True)
    if bad == "empty":
        key.write_bytes(b"")
    elif bad == "short":
        key.write_bytes(b"x" * 31)
    elif bad == "link":
        (tmp_path / "k").write_bytes(os.urandom(32))
        os.chmod(tmp_path / "k", 0o600)
        key.symlink_to(tmp_path / "k")
    elif bad == "world-readable":
        key.write_bytes(os.urandom(32))
        os.chmod(key, 0o644)
    elif bad == "hardlink":
        key.write_bytes(os.urandom(32))
        os.chmod(key, 0o600)
        os.link(key, tmp_path / "another-name")
    elif bad == "zeros":
        key.write_bytes(bytes(32))
        os.chmod(key, 0o600)
    elif bad == "shared":
        key.write_bytes(os.urandom(32))
        os.chmod(key, 0o600)
        os.chmod(key.parent, 0o777)
    else:
        key.mkdir()
    if bad in ("empty", "short"):
        os.chmod(key, 0o600)
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"x")
    rec = tmp_path / "r.jsonl"
    rec.write_text(json.dumps({"image_id": "a", "image_path": "img/a.png"}) + "\n")
    assert paths.vouch(rec, [tmp_path]) == {}
    assert "warning: provenance key" in capsys.readouterr().err
    assert paths.vouched_roots(rec) == []


def test_first_use_by_many_processes_at_once_gives_one_whole_key(tmp_path):
    code = "from sdg_data.io.paths import _key; import sys; k = _key(); sys.stdout.write(k.hex() if k else 'NONE')"
    env = {**os.environ, **_key_env(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for _ in range(12)]  # fmt: skip
    got = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in got]
    keys = {out.decode() for out, _ in got}
    assert len(keys) == 1 and "NONE" not in keys and len(keys.pop()) == 64
    key = tmp_path / "cache" / "sdg" / "provenance.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.stat().st_size == 32
    assert not [p for p in key.parent.iterdir() if p.name != "provenance.key"]  # no temp left behind


def test_an_unusable_home_means_no_vouch_never_a_crash(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    good, _ = sample_copy(work)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("x")
    env = {"XDG_CACHE_HOME": str(blocked)}
    res = sdg("distill", good, "--out", work / "dist", env=env)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert "warning:" in res.stderr and "no folder is vouched for" in res.stderr
    summary = json.loads((work / "dist" / "distill.summary.json").read_text())
    assert "image_roots" not in summary and summary["kept"] == 3
    res = sdg("build", work / "dist" / "distilled.jsonl", "--out", work / "ds", env=env)
    assert res.returncode != 0 and "Traceback" not in res.stderr  # no vouch: the images are outside dist/
    assert "--image-root" in res.stderr
    res = sdg("build", work / "dist" / "distilled.jsonl", "--out", work / "ds", "--image-root", work, env=env)
    assert res.returncode == 0, res.stderr


def test_a_vouch_binds_the_roots_identity_and_the_records_content(tmp_path, monkeypatch):
    from sdg_data.io.paths import vouch, vouched_roots

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "d").mkdir()
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "a.png").write_bytes(b"x")
    rec = tmp_path / "d" / "r.jsonl"
    rec.write_text(json.dumps({"image_id": "a", "image_path": "../imgs/a.png"}) + "\n")
    (tmp_path / "d" / "x.summary.json").write_text(json.dumps(vouch(rec, [root, tmp_path / "unused"])))
    assert vouched_roots(rec) == [str(root.resolve())]  # only the root that holds its images
    filtered = tmp_path / "d" / "filtered.jsonl"  # a grep of it in the same folder keeps the vouched roots
    filtered.write_text(rec.read_text())
    assert vouched_roots(filtered) == [str(root.resolve())]
    (tmp_path / "copy").mkdir()  # the same folder copied elsewhere (another identity) vouches for nothing
    for p in (rec, tmp_path / "d" / "x.summary.json"):
        shutil.copy(p, tmp_path / "copy")
    assert vouched_roots(tmp_path / "copy" / "r.jsonl") == []
    d_moved = tmp_path / "d-old"
    (tmp_path / "d").rename(d_moved)  # the vouched records folder replaced by another at the same path
    shutil.copytree(d_moved, tmp_path / "d")
    assert vouched_roots(rec) == [str(root.resolve())]  # the very file, byte for byte, at its path: its own vouch
    (tmp_path / "d" / "filtered.jsonl").write_text(rec.read_text() + "\n")
    assert vouched_roots(tmp_path / "d" / "filtered.jsonl") == []  # not the folder the stage wrote into
    shutil.rmtree(tmp_path / "d")
    d_moved.rename(tmp_path / "d")
    assert vouched_roots(rec) == [str(root.resolve())]
    root.rename(tmp_path / "moved")
    root.symlink_to("/")  # the vouched folder replaced by a link to /
    assert vouched_roots(rec) == []
    root.unlink()
    root.mkdir()  # another folder at the same path
    assert vouched_roots(rec) == []


def test_pull_from_an_export_with_url_images_vouches_for_no_folder(tmp_path):
    task = {"id": 1, "data": {"image": "https://example.org/a.png", "image_id": "a", "caption": "c"},
            "annotations": [{"id": 5, "completed_by": 1, "result": []}]}  # fmt: skip
    (tmp_path / "export.json").write_text(json.dumps([task]))
    res = sdg("annotate", "pull", "--from-export", tmp_path / "export.json", "--out", tmp_path / "ann" / "r.jsonl",
              cwd=tmp_path, env=_key_env(tmp_path))  # fmt: skip
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "ann" / "r.pull.summary.json").read_text())
    assert summary.get("image_roots", []) == []


# ------------------------------------------------------------------ 4. cost bounded by the shape of the input
def _flood(n: int, label: str = "artifact") -> list[dict]:
    return [{"box_2d": [i % 900, i % 900, i % 900 + 50, i % 900 + 50], "label": label, "description": "x",
             "importance": 50} for i in range(n)]  # fmt: skip


def test_a_box_flood_is_refused_before_its_pairs_are_made(tmp_path):
    import tracemalloc

    from sdg_data.scoring.evaluation import EvalConfig, evaluate_files

    gt = tmp_path / "gt.jsonl"
    gt.write_text(json.dumps({"image_id": "a", "defects": _flood(200)}) + "\n")
    pred = tmp_path / "p.jsonl"
    pred.write_text(json.dumps({"image_id": "a", "defects": _flood(4000)}) + "\n")
    tracemalloc.start()
    report = evaluate_files(gt, pred, None, EvalConfig(embedder="none"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert report["predictions"]["format_failures"] == 1 and report["counts"]["artifact"]["pred_boxes"] == 0
    assert peak < 60e6, peak  # 200 x 4000 pairs would be ~100 MB of arrays; a refused flood costs its parse
    gt.write_text(json.dumps({"image_id": "a", "defects": _flood(400)}) + "\n")
    res = sdg("eval", "--gt", gt, "--pred", pred, "--embedder", "none")
    assert res.returncode == 2 and "400 boxes, more than max_boxes 300" in res.stderr, res.stderr
    gt.write_text(json.dumps({"image_id": "a", "defects": _flood(4000)}) + "\n")
    res = sdg("eval", "--gt", gt, "--pred", pred, "--embedder", "none", "--max-boxes", "1000")
    assert res.returncode == 2 and "holds 4000 defects, more than the 1000 a record may hold" in res.stderr
    res = sdg("eval", "--gt", gt, "--pred", pred, "--embedder", "none", "--max-boxes", "5000")
    assert res.returncode == 2 and "max_boxes" in res.stderr and "Traceback" not in res.stderr


def test_a_completion_flood_is_a_format_failure_in_the_reward():
    from sdg_data.answer import render_response
    from sdg_data.records import Defect
    from sdg_data.scoring.reward import RewardConfig, reward_batch

    gt = [Defect.from_json(d) for d in _flood(5)]
    text = "<think>x</think><answer>" + json.dumps(_flood(400)) + "</answer>"
    got = reward_batch([text, render_response("x", gt)], [gt, gt], None, RewardConfig())
    assert got[0].case == "format_fail" and "400 boxes, more than max_boxes 300" in got[0].reason
    assert got[1].format_ok
    flood = "<think>x</think><answer>" + json.dumps(_flood(3000)) + "</answer>"
    (res,) = reward_batch([flood], [gt], None, RewardConfig())
    assert res.case == "format_fail" and "more than the 1000 a record may hold" in res.reason


def test_the_gallery_holds_a_bounded_number_of_images(tmp_path):
    from sdg_data.dataset.stats import GALLERY_GENERATORS, GALLERY_PER_GENERATOR, dataset_stats, write_report

    records = noise_records(tmp_path, n=120, size=64)
    rows = [json.loads(x) for x in records.read_text().splitlines()]
    for i, r in enumerate(rows):
        r["generator"] = f"gen-{i % 60}"  # one generator name per two records
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = dataset_stats(records)
    out = write_report(s, tmp_path / "report.html")
    html = out.read_text()
    assert html.count("class='card'") <= GALLERY_GENERATORS * (GALLERY_PER_GENERATOR + 1)
    assert f"The {GALLERY_GENERATORS} most frequent of 60 generators are shown." in html
    assert len(html) < 8e6


def test_distill_sends_no_record_longer_than_the_input_cap(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    good, _ = sample_copy(work)
    rows = [json.loads(x) for x in good.read_text().splitlines()]
    rows[0]["caption"] = "a cat " * 700_000  # ~4 MB: past the record's own caption limit
    rows[1]["caption"] = "a cat " * 1_000  # 6,000 characters: past this run's input cap
    good.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = sdg("distill", good, "--out", work / "dist", "--max-input-chars", "5000")
    assert res.returncode == 0, res.stderr
    rejects = [json.loads(x) for x in (work / "dist" / "distill.rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 2 and "field 'caption': 4200000 characters, more than 20000" in rejects[0]["reason"]
    assert "more than max_input_chars 5000: not sent to the teacher" in rejects[1]["reason"]


def _peak_rss_kb(*args, env=None) -> int:
    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True); "
            "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code, SDG, *map(str, args)], capture_output=True, text=True,
                         env={**os.environ, **(env or {})})  # fmt: skip
    rc, kb = out.stdout.split()
    return int(kb)


def test_a_huge_line_is_never_held_whole(tmp_path):
    small = tmp_path / "small.jsonl"
    small.write_text(json.dumps({"image_id": "a", "defects": []}) + "\n")
    big = tmp_path / "big.jsonl"
    with big.open("wb") as f:
        f.write(b'{"image_id": "a", "defects": []}\n{"image_id": "b", "caption": "')
        for _ in range(200):
            f.write(b"x" * (1 << 20))  # a 200 MB line
        f.write(b'", "defects": []}\n')
    cap = {"SDG_MAX_LINE_BYTES": str(8 << 20)}
    base = _peak_rss_kb("validate", small, env=cap)
    peak = _peak_rss_kb("validate", big, env=cap)
    assert peak - base < 40_000, (base, peak)  # bounded by the cap (8 MiB here), read past in blocks: not 200 MB
    res = sdg("validate", big)
    assert res.returncode == 2 and "longer than 67108864 bytes" in res.stderr


def test_agreement_work_is_bounded_by_annotators_per_image(tmp_path, monkeypatch):
    import annotation.agreement as agreement_mod
    from annotation.agreement import agreement_file

    box = {"box_2d": [100, 100, 400, 400], "label": "artifact", "description": "six fingers", "importance": 50}
    rows = [{"image_id": "crowded", "defects": [box], "provenance": {"annotator": f"a{k}"}} for k in range(200)]
    rows += [{"image_id": "b", "defects": [box], "provenance": {"annotator": who}} for who in ("a0", "a1")]
    rows += [{"image_id": "b", "defects": [box], "provenance": {"annotator": 7}},
             {"image_id": "b", "defects": [box], "provenance": {"annotator": {"x": 1}}}]  # fmt: skip
    path = tmp_path / "r.all.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    calls = []
    real = agreement_mod._scores
    monkeypatch.setattr(agreement_mod, "_scores", lambda *a: calls.append(1) or real(*a))
    report = agreement_file(path)
    # the one pair that shares an image, the pooled figure and each of its two annotators against the other's
    # consensus (not 19,900 pairs, nor 200 annotators of the crowded image)
    assert len(calls) <= 4
    assert report["left_out"] == {"records_with_an_annotator_that_is_not_a_name": 2,
                                  "records_with_more_than_300_boxes": 0,
                                  "images_with_more_than_20_annotators": 1}  # fmt: skip


def test_draw_counts_are_bounded():
    res = sdg("eval", "--gt", DEMO / "gt.jsonl", "--pred", DEMO / "pred.jsonl", "--embedder", "none",
              "--bootstrap", "1000000")  # fmt: skip
    assert res.returncode == 2 and "bootstrap" in res.stderr and "100000" in res.stderr, res.stderr
    res = sdg("compare", "a.json", "b.json", "--draws", "100000000")
    assert res.returncode == 2 and "--draws" in res.stderr


# ------------------------------------------------------------------ 5. crashes and silent coercions
def test_pull_survives_mixed_id_types_and_names_bad_fields(tmp_path):
    def region(rid, **value):
        base = {"x": 10, "y": 10, "width": 20, "height": 20, "rectanglelabels": ["artifact"]}
        from annotation.labeling import BOX, NUMBER, TEXT

        return [{"id": rid, "from_name": BOX, "to_name": "image", "type": "rectanglelabels",
                 "original_width": 64, "original_height": 64, "value": {**base, **value}},
                {"id": rid, "from_name": TEXT, "to_name": "image", "type": "textarea",
                 "value": {"text": [value.pop("text", "six fingers")]}},
                {"id": rid, "from_name": NUMBER, "to_name": "image", "type": "number",
                 "value": {"number": 50}}]  # fmt: skip

    same = "2026-12-01T10:00:00Z"
    task = {"id": 1, "data": {"image": "https://example.org/a.png", "image_id": "a", "caption": "c"},
            "annotations": [{"id": 5, "completed_by": 1, "created_at": same, "result": region("r1")},
                            {"id": "5b", "completed_by": 2, "created_at": same, "result": region("r2")}]}  # fmt: skip
    bad = {"id": 2, "data": {"image": "https://example.org/b.png", "image_id": "b", "caption": "c"},
           "annotations": [{"id": 6, "completed_by": 1, "result": region("n", rotation="nan")},
                           {"id": 7, "completed_by": 1, "result": region("s", x="abc")},
                           {"id": 8, "completed_by": 1, "result": region("d", text="y" * 1_000_000)}]}  # fmt: skip
    (tmp_path / "export.json").write_text(json.dumps([task, bad]))
    res = sdg("annotate", "pull", "--from-export", tmp_path / "export.json", "--out", tmp_path / "r.jsonl",
              cwd=tmp_path)  # fmt: skip
    assert "Traceback" not in res.stderr and (tmp_path / "r.jsonl").is_file(), res.stderr
    rejects = [json.loads(x)["reason"] for x in (tmp_path / "r.pull.rejects.jsonl").read_text().splitlines()]
    assert any("region n: field 'rotation': 'nan' is not a finite number" in r for r in rejects), rejects
    assert any("region s: box value lacks finite numeric x, y, width, height" in r for r in rejects), rejects
    assert any("region d: description of 1000000 characters, more than 2000" in r for r in rejects), rejects


@pytest.mark.parametrize("peaks", ['{"artifact": "0.9"}', '{"artifact": [1]}', '{"artifact": true}', '"0.9"'])
def test_image_level_refuses_heatmap_peaks_that_are_not_numbers(tmp_path, peaks):
    gt = tmp_path / "gt.jsonl"
    gt.write_text('{"image_id": "a", "defects": [], "provenance": {"heatmap_peaks": ' + peaks + "}}\n")
    pred = tmp_path / "p.jsonl"
    pred.write_text('{"image_id": "a", "defects": []}\n')
    res = sdg("eval-image-level", "--gt", gt, "--pred", pred)
    assert res.returncode == 2 and "record 'a' field 'provenance.heatmap_peaks" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_stats_shows_a_mathtext_generator_name_as_text(tmp_path):
    records = noise_records(tmp_path, n=4, size=64)
    rows = [json.loads(x) for x in records.read_text().splitlines()]
    for r in rows:
        r["generator"] = r"$\undefinedcmd$ {x}_^"
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = sdg("stats", records)
    assert res.returncode == 0, res.stderr


def test_integer_settings_name_the_field_for_inf_and_nan(tmp_path):
    for value in (".inf", ".nan", "-.inf"):
        recipe = tmp_path / "r.yaml"
        recipe.write_text(f"embed_batch_size: {value}\n")
        res = sdg("eval", "--gt", DEMO / "gt.jsonl", "--pred", DEMO / "pred.jsonl", "--config", recipe)
        assert res.returncode == 2 and "EvalConfig.embed_batch_size must be an int" in res.stderr, res.stderr


def test_a_failed_run_that_is_a_file_keeps_its_reports_and_a_good_run_clears_them(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    good, bad = sample_copy(work)
    out = work / "out"
    assert sdg("distill", good, "--out", out).returncode == 0
    (out / "failed-run").write_text("someone's file")
    res = sdg("distill", bad, "--out", out)
    assert res.returncode != 0 and "File exists" not in res.stderr, res.stderr
    assert (out / "failed-run-1" / "distill.rejects.jsonl").is_file()
    assert (out / "failed-run").read_text() == "someone's file"
    assert sdg("distill", good, "--out", out).returncode == 0  # a good run clears every failed run's reports
    assert not (out / "failed-run-1" / "distill.rejects.jsonl").exists()
    assert (out / "failed-run").read_text() == "someone's file"


# ------------------------------------------------------------------ the second probe's cases, each at its class
def test_export_copies_never_land_through_a_link_on_the_way(tmp_path):
    records = noise_records(tmp_path, n=4)
    assert sdg("build", records, "--out", tmp_path / "ds").returncode == 0
    target = decoy(tmp_path)
    (target / "images").mkdir()
    (target / "images" / "r0.png").write_bytes(b"precious")
    before = snapshot(target)
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "coco").symlink_to(target)  # the default copy folder, e/coco/images, planted
    res = sdg("export", "coco", tmp_path / "ds", "--out", tmp_path / "e" / "coco.json")
    assert res.returncode == 2 and "symbolic link inside the output folder" in res.stderr, res.stderr
    assert snapshot(target) == before


def test_a_caption_beside_an_image_is_read_only_as_a_small_regular_file(tmp_path):
    from tests.conftest import noise_png
    from train.detector.detect import DetectConfig, read_inputs

    (tmp_path / "imgs").mkdir()
    for i in range(3):
        noise_png(tmp_path / "imgs" / f"{i}.png", i, 32)
    secret = tmp_path / "credentials"
    secret.write_text("aws_secret_access_key = SECRET-VALUE\n")
    (tmp_path / "imgs" / "0.txt").write_text("a red car")
    (tmp_path / "imgs" / "1.txt").symlink_to(secret)
    with (tmp_path / "imgs" / "2.txt").open("wb") as f:
        f.truncate(600 << 20)  # 600 MB, sparse
    got = read_inputs(tmp_path / "imgs", DetectConfig())
    assert [it.caption for it in got.items] == ["a red car"]
    reasons = sorted(r.reason for r in got.rejects)
    assert all("is not a regular file of at most 64 KB" in r for r in reasons) and len(reasons) == 2
    assert "SECRET" not in json.dumps([it.caption for it in got.items])


def test_scoring_work_is_bounded_across_images_and_in_agreement(tmp_path):
    import tracemalloc

    from annotation.agreement import agreement_file
    from sdg_data.scoring.evaluation import EvalConfig, evaluate_files

    gt, pred = tmp_path / "gt.jsonl", tmp_path / "p.jsonl"
    gt.write_text("".join(json.dumps({"image_id": f"i{k}", "defects": _flood(300)}) + "\n" for k in range(100)))
    pred.write_text("".join(json.dumps({"image_id": f"i{k}", "defects": _flood(300)}) + "\n" for k in range(100)))
    tracemalloc.start()
    with pytest.raises(ValueError, match="9000000 box pairs to score .* more than max_pairs 5000000"):
        evaluate_files(gt, pred, None, EvalConfig(embedder="none"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 400e6, peak  # the records were read; no pair was made (9M pairs would be ~2 GB)
    rows = [{"image_id": "a", "defects": _flood(400), "provenance": {"annotator": f"a{k}"}} for k in range(5)]
    path = tmp_path / "r.all.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = agreement_file(path)
    assert report["left_out"]["records_with_more_than_300_boxes"] == 5 and not report["pairs"]


def test_a_shard_listed_twice_is_read_once(tmp_path):
    records = noise_records(tmp_path, n=6)
    assert sdg("build", records, "--out", tmp_path / "ds", "--test-images", "2").returncode == 0
    summary_path = tmp_path / "ds" / "meta" / "build.summary.json"
    summary = json.loads(summary_path.read_text())
    summary["files"] = {c: fs * 50 for c, fs in summary["files"].items()}
    summary_path.write_text(json.dumps(summary))
    from sdg_data.io.arrow import read_split

    assert len(read_split(tmp_path / "ds", "all")) == 6


def test_a_distill_cache_folder_link_or_a_malformed_entry_is_a_miss(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    good, _ = sample_copy(work, 2)
    assert sdg("distill", good, "--out", work / "out").returncode == 0
    entry = next((work / "out" / "cache").rglob("*.json"))
    if entry.name == "usage.jsonl":
        entry = next(p for p in (work / "out" / "cache").rglob("*.json") if p.parent.name != "cache")
    planted = json.loads(entry.read_text())
    planted["record"]["think"] = "PLANTED"
    moved = tmp_path / "moved"
    entry.parent.rename(moved)
    (moved / entry.name).write_text(json.dumps(planted))
    entry.parent.symlink_to(moved)  # the entry's folder, not the entry, is the link
    assert sdg("distill", good, "--out", work / "out").returncode == 2  # a link below the output: refused
    entry.parent.unlink()
    entry.parent.mkdir()
    entry.write_text(json.dumps({**planted, "attempts": [1]}))  # malformed: a miss, the work redone
    res = sdg("distill", good, "--out", work / "out")
    assert res.returncode == 0 and "PLANTED" not in (work / "out" / "distilled.jsonl").read_text(), res.stderr


def test_pull_reads_an_odd_task_without_crashing(tmp_path):
    task = {"id": 1, "data": "not an object", "annotations": []}
    ann = {"id": 5, "completed_by": 1, "was_cancelled": "false", "result": []}
    ok = {"id": 2, "data": {"image": "https://example.org/a.png", "image_id": "a", "caption": "c"},
          "annotations": [ann]}  # fmt: skip
    (tmp_path / "export.json").write_text(json.dumps([task, ok]))
    res = sdg("annotate", "pull", "--from-export", tmp_path / "export.json", "--out", tmp_path / "r.jsonl",
              cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    rows = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["image_id"] for r in rows] == ["a"]  # "false" as text is no skip


@pytest.mark.parametrize("field, size", [("image_id", 513), ("generator", 257), ("caption", 20_001)])
def test_text_fields_are_bounded(field, size):
    from sdg_data.records import ImageRecord, RecordError

    obj = {"image_id": "a", "defects": [], field: "x" * size}
    with pytest.raises(RecordError, match=f"{size} characters, more than {size - 1}"):
        ImageRecord.from_json(obj)
