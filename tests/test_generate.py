"""sdg generate on tiny random pipelines of the four generator classes: end to end, resume after a kill,
two ranks without duplicates, prompt-disjoint splits, retries and rejects."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


pytest.importorskip("diffusers")

from sdg_data.config import load_config  # noqa: E402
from sdg_data.generate import runner  # noqa: E402
from sdg_data.generate.prompts import read_prompts  # noqa: E402
from sdg_data.generate.registry import REGISTRY, resolve  # noqa: E402
from sdg_data.generate.runner import GenerateConfig, generate, plan  # noqa: E402
from sdg_data.records import ImageRecord  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]
TINY_RECIPE = ROOT / "sdg_data" / "recipes" / "generate_tiny.yaml"
PROMPTS = [
    "a red car on a grey road",
    "two cats asleep on a sofa",
    "a lighthouse at dusk",
    "a bowl of ramen with chopsticks",
    "a kite over a beach",
    "an old man reading a newspaper",
    "a glass of orange juice",
    "three yellow tulips in a vase",
]


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    from sdg_data.testkit.pipelines import save_tiny_pipelines

    root = tmp_path_factory.mktemp("tiny-pipelines")
    save_tiny_pipelines(root)
    return root


def _prompts(tmp_path: Path, texts=PROMPTS, extra=()) -> Path:
    p = tmp_path / "prompts.jsonl"
    p.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts) + "".join(extra))
    return p


def _cfg(tiny_root: Path, **kw) -> GenerateConfig:
    cfg = load_config(GenerateConfig, TINY_RECIPE, {"progress": False, **kw})
    cfg.model_paths = {REGISTRY[n].name: str(tiny_root / a) for a, n in
                       {"flux2": "FLUX.2-dev", "z-image": "Z-Image-Turbo", "longcat": "LongCat-Image",
                        "sana": "SANA-1.5-1.6B"}.items()}  # fmt: skip
    return cfg


def _manifest(out: Path) -> list[dict]:
    from sdg_data.io.jsonl import read_records

    read_records(out / "manifest.jsonl")  # what generate writes passes the core contract
    return [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]


def test_all_four_generator_classes_end_to_end(tiny_root, tmp_path):
    bad = ['{"prompt": ""}\n', '{"prompt": "A red car  on a grey road"}\n', '{"text": "no prompt column"}\n']
    src = _prompts(tmp_path, extra=bad)
    s = generate(src, tmp_path / "out", _cfg(tiny_root))
    rows = _manifest(tmp_path / "out")
    assert s["prompt_rows"] == 11 and s["prompts_rejected"] == 3 and s["images"] == 8 == len(rows)
    # spread evenly: 8 prompts over 4 generators, each through its own pipeline class
    assert s["by_generator"] == {name: 2 for name in REGISTRY}
    pipes = {r["generator"]: r["provenance"]["pipeline"] for r in rows}
    assert pipes == {n: REGISTRY[n].pipeline_class for n in REGISTRY}
    for r in rows:
        rec = ImageRecord.from_json(r)
        assert r["defects"] is None and not rec.annotated and "annotated" not in rec.provenance  # not "clean"
        assert (rec.width, rec.height) == (64, 64) and rec.split in ("train", "test")
        png = tmp_path / "out" / rec.image_path
        assert png.is_file()
        from PIL import Image

        assert Image.open(png).size == (64, 64)
        prov = rec.provenance
        for key in ("model_id", "pipeline", "steps", "guidance_scale", "dtype", "seed", "seconds", "versions"):
            assert key in prov
    rejects = [json.loads(x) for x in (tmp_path / "out" / "generate.rejects.jsonl").read_text().splitlines()]
    assert sorted(r["line"] for r in rejects) == [9, 10, 11]  # a prompt row's number
    assert not list((tmp_path / "out").rglob("*.tmp"))


@pytest.mark.parametrize("size", [256, 512])
def test_tiny_pipelines_work_at_the_sizes_tests_and_the_demo_ask_for(tiny_root, tmp_path, size):
    src = _prompts(tmp_path, PROMPTS[:4])
    s = generate(src, tmp_path / "out", _cfg(tiny_root, height=size, width=size, steps=1))
    assert s["images"] == 4 and s["failed"] == 0 and s["by_generator"] == {name: 1 for name in REGISTRY}
    from PIL import Image

    for r in _manifest(tmp_path / "out"):
        assert Image.open(tmp_path / "out" / r["image_path"]).size == (size, size)


def test_rerun_skips_finished_images(tiny_root, tmp_path):
    src = _prompts(tmp_path, PROMPTS[:4])
    cfg = _cfg(tiny_root, generator=["Z-Image-Turbo"], seeds=2)
    first = generate(src, tmp_path / "out", cfg)
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "images").rglob("*.png")}
    second = generate(src, tmp_path / "out", cfg)
    assert first["images"] == second["images"] == 8
    assert second["ranks"][0]["skipped_existing"] == 8 and second["ranks"][0]["generated"] == 0
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    ids = [r["image_id"] for r in _manifest(tmp_path / "out")]
    assert len(ids) == len(set(ids)) == 8


def test_image_ids_are_stable_and_follow_the_settings(tiny_root):
    from sdg_data.generate.prompts import Prompt

    p = [Prompt("a red car", 1, "x")]
    a = plan(p, GenerateConfig(generator=["SANA-1.5-1.6B"], seeds=2))
    b = plan(p, GenerateConfig(generator=["SANA-1.5-1.6B"], seeds=2))
    c = plan(p, GenerateConfig(generator=["SANA-1.5-1.6B"], seeds=2, steps=10))
    assert [i.image_id for i in a] == [i.image_id for i in b]
    assert len({i.image_id for i in a}) == 2  # seeds differ
    assert not {i.image_id for i in a} & {i.image_id for i in c}  # settings change the pixels, so the id


def test_splits_are_prompt_disjoint_and_carried(tiny_root, tmp_path):
    texts = [f"prompt number {i}" for i in range(40)]
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps({"prompt": t, **({"split": "test"} if i == 0 else {})}) + "\n"
                           for i, t in enumerate(texts)))  # fmt: skip
    prompts, _, _ = read_prompts(str(src))
    items = plan(prompts, GenerateConfig(assign="all", seeds=2, test_fraction=0.3))
    by_prompt: dict[str, set] = {}
    for it in items:
        by_prompt.setdefault(it.prompt.text, set()).add(it.split)
    assert all(len(s) == 1 for s in by_prompt.values())
    assert by_prompt["prompt number 0"] == {"test"}  # the input's split wins
    n_test = sum(s == {"test"} for s in by_prompt.values())
    assert 4 <= n_test <= 22
    assert len(items) == 40 * 4 * 2


def test_failed_generations_are_retried_then_recorded(tiny_root, tmp_path, monkeypatch):
    """NaN output for one prompt and an exception for a batch holding another: retried within the bound, then
    recorded with the reason; the batch's other images are still made."""
    import numpy as np

    real = runner._run_batch
    calls: list[list[str]] = []

    def flaky(pipe, items, cfg, device):
        calls.append([it.prompt.text for it in items])
        texts = [it.prompt.text for it in items]
        if "a lighthouse at dusk" in texts and len(items) > 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        out = real(pipe, items, cfg, device)
        return [np.full_like(a, np.nan) if it.prompt.text == PROMPTS[0] else a for it, a in zip(items, out)]

    monkeypatch.setattr(runner, "_run_batch", flaky)
    src = _prompts(tmp_path, PROMPTS[:4])
    s = generate(src, tmp_path / "out", _cfg(tiny_root, generator=["Z-Image-Turbo"], batch_size=4, max_retries=2))
    assert s["images"] == 3 and s["failed"] == 1
    rej = [json.loads(x) for x in (tmp_path / "out" / "generate.rejects.jsonl").read_text().splitlines()]
    assert rej[0]["record"]["prompt"] == PROMPTS[0] and rej[0]["record"]["attempts"] == 3 and "NaN" in rej[0]["reason"]
    assert sum(c == [PROMPTS[0]] for c in calls) == 3  # the first try came inside the failed batch


def test_safety_checker_hook_rejects(tiny_root, tmp_path):
    mod = tmp_path / "my_checker.py"
    mod.write_text("def check(image, prompt):\n    return ('ramen' not in prompt, 'food is not allowed here')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        src = _prompts(tmp_path, PROMPTS[:4])
        cfg = _cfg(tiny_root, generator=["Z-Image-Turbo"], safety_checker="my_checker:check")
        s = generate(src, tmp_path / "out", cfg)
    finally:
        sys.path.remove(str(tmp_path))
    assert s["images"] == 3 and s["failed"] == 1
    rej = json.loads((tmp_path / "out" / "generate.rejects.jsonl").read_text().splitlines()[0])
    assert rej["reason"] == "safety: food is not allowed here" and rej["record"]["attempts"] == 1


def test_unknown_generator_and_bad_recipe_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="not a registry name"):
        resolve("no-such-generator")
    bad = tmp_path / "r.yaml"
    bad.write_text("generator: [FLUX.2-dev]\nheigth: 512\n")
    with pytest.raises(ValueError, match="heigth"):
        load_config(GenerateConfig, bad)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sdg_data.cli", "generate", *args]


def test_killed_run_resumes_without_duplicates(tiny_root, tmp_path):
    texts = [f"a small picture of thing {i}" for i in range(40)]
    src = _prompts(tmp_path, texts)
    out = tmp_path / "out"
    args = _cli("--prompts", str(src), "--out", str(out), "--config", str(TINY_RECIPE), "--model-root",
                str(tiny_root), "--generator", "Z-Image-Turbo", "--batch-size", "1")  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    manifest = out / "manifest.rank0.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists() and manifest.read_text().count("\n") >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = manifest.read_text().count("\n")
    assert 3 <= done_before < 40, "the run finished before it could be killed"
    res = subprocess.run(args, env=env, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = _manifest(out)
    ids = [r["image_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 40
    summary = json.loads((out / "generate.summary.json").read_text())
    assert summary["ranks"][0]["skipped_existing"] == done_before
    assert len(list((out / "images").rglob("*.png"))) == 40 and not list(out.rglob("*.tmp"))


def test_two_ranks_share_the_work_without_duplicates(tiny_root, tmp_path):
    src = _prompts(tmp_path)
    out = tmp_path / "out"
    accelerate = str(Path(sys.executable).parent / "accelerate")
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "-m", "sdg_data.cli", "generate", "--prompts", str(src), "--out",
           str(out), "--config", str(TINY_RECIPE), "--model-root", str(tiny_root)]  # fmt: skip
    res = subprocess.run(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, cwd=ROOT,
                         timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _manifest(out)
    per_rank = [{r["image_id"] for r in rows if r["provenance"]["rank"] == k} for k in (0, 1)]
    assert per_rank[0] and per_rank[1] and not per_rank[0] & per_rank[1] and len(rows) == 8
    summary = json.loads((out / "generate.summary.json").read_text())
    assert summary["world_size"] == 2 and sorted(r["generated"] for r in summary["ranks"]) == sorted(
        map(len, per_rank)
    )
    assert not list(out.glob("*.rank*.json*"))  # merged: the ranks' files are gone
    res = subprocess.run(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, cwd=ROOT,
                         timeout=300)  # fmt: skip
    assert res.returncode == 0 and "8 already made (resumed)" in res.stdout, res.stdout + res.stderr[-2000:]
    assert _manifest(out) == rows


def test_the_manifest_is_not_annotated_so_distill_and_validate_never_call_it_clean(tiny_root, tmp_path):
    """generate's manifest says "not annotated" (defects null): validate counts it so, distill rejects every
    record with the reason and exits non-zero; the schema 1.1 form ([] + provenance.annotated false) reads the
    same, with a one-line note."""
    from typer.testing import CliRunner

    from sdg_data.cli import app

    generate(_prompts(tmp_path, PROMPTS[:6]), tmp_path / "gen", _cfg(tiny_root))
    manifest = tmp_path / "gen" / "manifest.jsonl"
    runner = CliRunner()
    res = runner.invoke(app, ["validate", str(manifest)])
    assert res.exit_code == 0, res.output
    assert "0 annotated with defects (0 defects), 0 annotated clean, 6 not annotated: valid" in res.output
    res = runner.invoke(app, ["distill", str(manifest), "--out", str(tmp_path / "dist")])
    assert res.exit_code != 0, res.output
    assert not (tmp_path / "dist" / "distilled.jsonl").exists()
    rejects = [json.loads(x) for x in (tmp_path / "dist" / "distill.rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 6 and all("not annotated" in r["reason"] for r in rejects)
    # the schema 1.1 form of the same manifest
    old = tmp_path / "gen" / "old.jsonl"
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    old.write_text("".join(json.dumps({**r, "defects": [], "provenance": {**r["provenance"], "annotated": False}})
                           + "\n" for r in rows))  # fmt: skip
    res = runner.invoke(app, ["validate", str(old)])
    assert res.exit_code == 0 and "6 not annotated" in res.output, res.output
    assert "6 record(s) say" in res.output and "read as not annotated, not clean" in res.output
    # a person's verdict, [] with no marker, is "annotated clean" and distills
    clean = tmp_path / "gen" / "checked.jsonl"
    clean.write_text("".join(json.dumps({**r, "defects": []}) + "\n" for r in rows))
    res = runner.invoke(app, ["validate", str(clean)])
    assert "6 annotated clean, 0 not annotated: valid" in res.output, res.output
    res = runner.invoke(app, ["distill", str(clean), "--out", str(tmp_path / "dist2")])
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "dist2" / "distilled.jsonl").read_text().splitlines()) == 6
