"""The README's chain, run as a user runs it: one working folder, each stage's output the next one's input, default
flags (no --image-root after the annotation step, whose image root is the server's). generate -> annotate (an
export of the server's tasks, annotated as the editor writes results) -> distill -> build -> stats / viz / export
/ refine, plus stats and viz on the records before a build."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from annotation.push import image_url
from annotation.testkit import random_result


SDG = str(Path(sys.executable).parent / "sdg")


@pytest.fixture(scope="module")
def tiny_pipelines(tmp_path_factory) -> Path:
    from sdg_data.testkit.pipelines import save_tiny_pipelines

    root = tmp_path_factory.mktemp("tiny")
    save_tiny_pipelines(root, ["z-image"])
    return root


def _run(work: Path, *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([SDG, *args], cwd=work, capture_output=True, text=True)
    assert res.returncode == 0, f"sdg {' '.join(args)}\n{res.stdout}\n{res.stderr}"
    return res


def test_the_readme_chain_runs_on_defaults_from_one_folder(tmp_path, tiny_pipelines):
    work = tmp_path / "work"
    work.mkdir()
    prompts = ["a red apple on a table", "two cats on a sofa", "a lighthouse at dusk", "a bowl of ramen"]
    (work / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    recipe = (Path(__file__).resolve().parents[1] / "sdg_data" / "recipes" / "generate_tiny.yaml").read_text()
    (work / "gen.yaml").write_text(recipe.replace("[FLUX.2-dev, Z-Image-Turbo, LongCat-Image, SANA-1.5-1.6B]",
                                                  "[Z-Image-Turbo]"))  # fmt: skip
    _run(work, "generate", "--prompts", "prompts.jsonl", "--out", "gen", "--config", "gen.yaml",
         "--model-root", str(tiny_pipelines))  # fmt: skip
    manifest = [json.loads(x) for x in (work / "gen" / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 4

    # annotate: the server serves gen/ (sdg annotate serve --image-root gen); its export, annotated in the editor
    rng = random.Random(0)
    tasks = []
    for k, row in enumerate(manifest):
        image = (work / "gen" / row["image_path"]).resolve()
        data = {
            "image": image_url(str(image.relative_to(work.resolve()))),
            "image_id": row["image_id"],
            "caption": row["caption"],
        }
        result = random_result(rng, row["width"], row["height"]) if k else []  # the first one clean
        tasks.append({"id": k + 1, "data": data, "annotations": [{"id": 10 + k, "completed_by": 1, "result": result,
                      "created_at": "2026-12-01T10:00:00Z", "updated_at": "2026-12-01T10:00:00Z"}]})  # fmt: skip
    (work / "export.json").write_text(json.dumps(tasks))
    _run(work, "annotate", "pull", "--from-export", "export.json", "--out", "ann/records.jsonl", "--image-root", "gen")

    # from here on, no --image-root anywhere: each stage's checked roots travel with its output
    _run(work, "stats", "ann/records.jsonl")  # before a build
    _run(work, "distill", "ann/records.jsonl", "--out", "dist")
    _run(work, "viz", "dist/distilled.jsonl", "--out", "viz-records", "--limit", "2")
    res = _run(work, "build", "dist/distilled.jsonl", "--out", "ds")
    assert "dataset: ds" in res.stdout
    summary = json.loads((work / "ds" / "meta" / "build.summary.json").read_text())
    assert summary["read"] == summary["built"] == 4, summary
    _run(work, "stats", "ds")
    _run(work, "viz", "ds", "--out", "viz", "--limit", "2")
    _run(work, "export", "coco", "ds", "--out", "coco/sdg.json")
    _run(work, "export", "coco", "dist/distilled.jsonl", "--out", "coco2/sdg.json")
    # 4 images leave no test split: the build says so last, and refine (like eval, detect, reward) refuses to
    # take the training images in its place until asked
    assert res.stderr.strip().splitlines()[-1].startswith("warning: the dataset has no test split")
    refused = subprocess.run([SDG, "refine", "ds", "--out", "refine", "--backend", "dry-run"], cwd=work,
                             capture_output=True, text=True)  # fmt: skip
    assert refused.returncode == 2 and "has no 'test' split" in refused.stderr, refused.stderr
    _run(work, "refine", "ds", "--out", "refine", "--backend", "dry-run", "--split", "all")
    _run(work, "refine", "dist/distilled.jsonl", "--out", "refine2", "--backend", "dry-run")
    assert (work / "ds" / "report.html").is_file() and (work / "ann" / "records.report.html").is_file()
    # a built dataset is an input like a records file: validate it, distill it again, rebuild it
    _run(work, "validate", "ds")
    _run(work, "distill", "ds", "--out", "dist-again")
    _run(work, "build", "ds", "--out", "ds-again")
    assert json.loads((work / "ds-again" / "meta" / "build.summary.json").read_text())["built"] == 4


def test_a_vouch_is_bound_to_its_file_and_this_machine(tmp_path, monkeypatch):
    """A summary that arrived with the data (or was edited, or whose records file moved) vouches for nothing: the
    default root stays the records file's folder."""
    from sdg_data.io.paths import vouch, vouched_roots

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "d").mkdir()
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"x")
    rec = tmp_path / "d" / "r.jsonl"
    rec.write_text(json.dumps({"image_id": "a", "image_path": "../img/a.png"}) + "\n")
    (tmp_path / "d" / "x.summary.json").write_text(json.dumps(vouch(rec, [tmp_path])))
    assert vouched_roots(rec) == [str(tmp_path.resolve())]
    planted = {"image_roots": ["/"], "image_roots_mac": "0" * 64}
    (tmp_path / "d" / "x.summary.json").write_text(json.dumps(planted))
    assert vouched_roots(rec) == []
    (tmp_path / "d" / "x.summary.json").write_text(json.dumps(vouch(rec, [tmp_path])))
    (tmp_path / "e").mkdir()
    moved = tmp_path / "e" / "moved.jsonl"  # another folder: the summary there vouches for nothing
    shutil.copy(tmp_path / "d" / "x.summary.json", tmp_path / "e")
    rec.rename(moved)
    assert vouched_roots(moved) == []
    moved.rename(rec)
    derived = tmp_path / "d" / "filtered.jsonl"  # the user's own filter of it, in the same folder: the same roots
    derived.write_text(rec.read_text())
    assert vouched_roots(derived) == [str(tmp_path.resolve())]
    assert vouched_roots(rec) == [str(tmp_path.resolve())]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "other-machine"))
    assert vouched_roots(rec) == []
