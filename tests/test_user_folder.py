"""The toolkit from the user's own folder, as an installed tool: the README's lines run from a folder outside the
repository with the installed ``sdg`` only, recipes and launch files by name, a routine edit of a stage's output
accepted, and the same from a wheel installed apart from the checkout."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from annotation.push import image_url
from annotation.testkit import random_result


ROOT = Path(__file__).resolve().parents[1]
SDG = str(Path(sys.executable).parent / "sdg")
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from sdg_data.testkit.pipelines import save_tiny_pipelines

    root = tmp_path_factory.mktemp("tiny")
    save_tiny_pipelines(root, ["z-image"])
    return root


def run(work: Path, *args, ok: bool = True, sdg: list[str] | None = None, env: dict | None = None):
    res = subprocess.run([*(sdg or [SDG]), *map(str, args)], cwd=work, capture_output=True, text=True, timeout=600,
                         env={**os.environ, **OFFLINE, **(env or {})})  # fmt: skip
    if ok:
        assert res.returncode == 0, f"sdg {' '.join(map(str, args))}\n{res.stdout}\n{res.stderr}"
    return res


def _annotated_export(work: Path, manifest: list[dict]) -> Path:
    """The server's export of the generated images, annotated as the editor writes results (the first clean)."""
    rng = random.Random(0)
    tasks = []
    for k, row in enumerate(manifest):
        image = (work / "gen" / row["image_path"]).resolve()
        data = {"image": image_url(str(image.relative_to(work.resolve()))), "image_id": row["image_id"],
                "caption": row["caption"]}  # fmt: skip
        result = random_result(rng, row["width"], row["height"]) if k else []
        tasks.append({"id": k + 1, "data": data, "annotations": [{"id": 10 + k, "completed_by": 1, "result": result,
                      "created_at": "2026-12-01T10:00:00Z", "updated_at": "2026-12-01T10:00:00Z"}]})  # fmt: skip
    (work / "export.json").write_text(json.dumps(tasks))
    return work / "export.json"


def test_the_readme_lines_from_a_folder_outside_the_repository(tmp_path, tiny):
    work = tmp_path / "my-project"  # a user's folder: no checkout, no recipes in it
    work.mkdir()
    assert not (work / "sdg_data").exists() and ROOT not in work.parents
    prompts = ["a red apple on a table", "two cats on a sofa", "a lighthouse at dusk", "a bowl of ramen",
               "a kite over a beach", "three tulips in a vase"]  # fmt: skip
    (work / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    listed = run(work, "recipes").stdout
    for name in ("generate_sdg30k", "gemini", "team", "sft/qwen3_vl_4b_sdg30k", "zero2_1x8", "flux1_dev_sdg"):
        assert name in listed, listed
    assert run(work, "recipes", "show", "generate_sdg30k").stdout.startswith("# SDG-30K's generation")
    # 1. images, the recipe by name (the README line, with the tiny pipelines standing in for the real ones)
    run(work, "generate", "--prompts", "prompts.jsonl", "--out", "gen", "--config", "generate_tiny",
        "--generator", "Z-Image-Turbo", "--model-root", tiny)  # fmt: skip
    manifest = [json.loads(x) for x in (work / "gen" / "manifest.jsonl").read_text().splitlines()]
    assert "not annotated" in run(work, "validate", "gen/manifest.jsonl").stdout
    # 2. the annotations pulled (from an export of the server's tasks), then a routine edit of the output
    run(work, "annotate", "pull", "--from-export", _annotated_export(work, manifest), "--out", "ann/records.jsonl",
        "--image-root", "gen")  # fmt: skip
    lines = (work / "ann" / "records.jsonl").read_text().splitlines()
    (work / "ann" / "filtered.jsonl").write_text("\n".join(lines[:5]) + "\n")  # grep / head / jq: routine
    # 3. distill the filtered copy with no --image-root: the vouched folder covers the user's own file
    res = run(work, "distill", "ann/filtered.jsonl", "--out", "dist")
    assert "distilled 5, rejected 0" in res.stdout, res.stdout
    res = run(work, "distill", "ann/filtered.jsonl", "--out", "dist2", "--config", "gemini", ok=False,
              env={"GEMINI_API_KEY": ""})  # fmt: skip
    assert res.returncode == 2 and "GEMINI_API_KEY" in res.stderr  # by name from anywhere; fails at once
    # 4. the dataset: --push-to-hub offline fails before the build; without it, built
    res = run(work, "build", "dist/distilled.jsonl", "--out", "ds", "--push-to-hub", "you/my-sdg", ok=False)
    assert res.returncode == 2 and "HF_HUB_OFFLINE" in res.stderr and not (work / "ds").exists(), res.stderr
    run(work, "build", "dist/distilled.jsonl", "--out", "ds", "--config", "build_demo")
    run(work, "stats", "ds")
    # 5. the detector's lines fail clearly, and the training help is quick and names the recipe flags
    res = run(work, "detect", "ds", "--out", "detect", "--model", "runs/grpo", ok=False)
    assert res.returncode == 2 and "no such folder here, and not in the local Hugging Face cache" in res.stderr
    (work / "runs").mkdir()
    res = run(work, "detect", "ds", "--out", "detect", "--model", "runs/grpo", ok=False)
    assert res.returncode == 2 and "runs/grpo': no such folder" in res.stderr
    help_text = run(work, "train", "sft", "--help").stdout
    assert "--config NAME|PATH" in help_text and "--accelerate-config NAME|PATH" in help_text
    assert "sft/qwen3_vl_4b_sdg30k" in help_text and "zero2_1x8" in help_text
    res = run(work, "eval", "--gt", "ds", "--pred", "ds", "--embedder", "lexical", "--out", "self.json")
    assert json.loads((work / "self.json").read_text())["artifact"]["BoxF1@0.5"] in (1.0, None)
    res = run(work, "compare", "self.json", "nosuch.json", ok=False)
    assert res.returncode == 2 and res.stderr.strip() == "error: nosuch.json: no such file"


def test_a_wheel_installed_apart_from_the_checkout_runs_the_quickstart_and_the_names(tmp_path, tiny):
    """``pip wheel`` of the project, installed into a folder of its own (its dependencies from this environment,
    offline), used from a folder outside the repository: the bundled recipes, launch files and demo data travel in
    the wheel and are found by name."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("sdg_data", "annotation", "distill", "train"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels),
                            str(src)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("sdg-*.whl")
    site = tmp_path / "site"
    got = subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert got.returncode == 0, got.stderr[-3000:]
    work = tmp_path / "user"
    work.mkdir()
    env = {"PYTHONPATH": str(site)}
    sdg = [sys.executable, "-m", "sdg_data.cli"]
    where = run(work, "-c", "import sdg_data, sys; print(sdg_data.__file__)", sdg=[sys.executable], env=env)
    assert where.stdout.strip().startswith(str(site)), where.stdout  # the wheel's copy, not the checkout's
    assert "zero2_1x8" in run(work, "recipes", sdg=sdg, env=env).stdout
    launch = run(work, "recipes", "show", "zero2_1x8", sdg=sdg, env=env).stdout
    assert "deepspeed_config_file" in launch and (site / "train" / "launch" / "ds_zero2.json").is_file()
    demo = site / "sdg_data" / "demo"
    run(work, "validate", demo / "sample" / "records.jsonl", sdg=sdg, env=env)
    run(work, "eval", "--gt", demo / "gt.jsonl", "--pred", demo / "pred.jsonl", "--config", "eval_paper",
        "--embedder", "lexical", "--out", "eval.json", sdg=sdg, env=env)  # fmt: skip
    (work / "prompts.txt").write_text("a red apple\ntwo cats\n")
    run(work, "generate", "--prompts", "prompts.txt", "--out", "gen", "--config", "generate_tiny",
        "--generator", "Z-Image-Turbo", "--model-root", tiny, sdg=sdg, env=env)  # fmt: skip
    run(work, "distill", demo / "sample" / "records.jsonl", "--out", "dist", sdg=sdg, env=env)
    run(work, "build", "dist/distilled.jsonl", "--out", "ds", "--config", "build_demo", sdg=sdg, env=env)
    assert (work / "ds" / "README.md").is_file() and (work / "eval.json").is_file()
    res = run(work, "refine", "dist/distilled.jsonl", "--out", "refined", "--backend", "dry-run", sdg=sdg, env=env)
    assert "rejected 0" in res.stdout, res.stdout  # the editor's instruction templates travel in the wheel
    assert (site / "train" / "prompts" / "judge_v1.txt").is_file()
