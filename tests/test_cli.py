import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sdg_data.cli import app
from tests.conftest import DEMO


runner = CliRunner()


def demo(cmd: str, *extra: str):
    """Run `sdg CMD` on the bundled demo files."""
    return runner.invoke(app, [cmd, "--gt", str(DEMO / "gt.jsonl"), "--pred", str(DEMO / "pred.jsonl"), *extra])


@pytest.mark.parametrize("cmd", [[], ["eval"], ["reward"], ["validate"], ["import-sdg30k"]])
def test_help(cmd):
    res = runner.invoke(app, [*cmd, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def test_eval_and_reward_on_the_demo(tmp_path):
    res = demo("eval", "--out", str(tmp_path / "r.json"), "--embedder", "lexical")
    assert res.exit_code == 0, res.output
    assert "Artifact" in res.output and "FLUX.2-dev (2)" in res.output and "1 format failures" in res.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["config"]["embedder"] == "lexical"
    res = demo("reward", "--out", str(tmp_path / "rw.jsonl"), "--embedder", "lexical")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (tmp_path / "rw.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and sum(not r["format_ok"] for r in rows) == 1
    assert next(r for r in rows if r["image_id"] == "demo-0003")["reward"] == pytest.approx(0.18)


def test_eval_with_a_real_transformers_embedder(tmp_path, tiny_qwen3_embedder_dir):
    res = demo("eval", "--out", str(tmp_path / "r.json"), "--embedder", str(tiny_qwen3_embedder_dir))
    assert res.exit_code == 0, res.output
    cos = json.loads((tmp_path / "r.json").read_text())["artifact"]["DescCos@0.1"]
    assert -1.0 <= cos <= 1.0


def test_bad_input_is_one_clear_line(tmp_path):
    gt = tmp_path / "gt.jsonl"
    gt.write_text(
        json.dumps({"image_id": "a", "defects": [{"box_2d": [1, 2, 3, 4], "label": "artifact", "importance": 101}]})
        + "\n"
    )
    res = runner.invoke(app, ["eval", "--gt", str(gt), "--pred", str(gt), "--embedder", "none"])
    assert res.exit_code == 2
    assert "gt.jsonl:1: record 'a' field 'defects[0].importance': must be within 1-100, got 101" in res.output
    res = runner.invoke(app, ["eval", "--gt", str(DEMO / "gt.jsonl"), "--pred", str(gt), "--match", "best"])
    assert res.exit_code == 2 and "match must be one of" in res.output
    res = runner.invoke(app, ["validate", str(tmp_path / "nope.jsonl")])
    assert res.exit_code == 2 and "no such file" in res.output


def test_validate(tmp_path):
    res = runner.invoke(app, ["validate", str(DEMO / "gt.jsonl")])
    assert res.exit_code == 0, res.output
    assert "8 records: 6 annotated with defects (10 defects), 2 annotated clean, 0 not annotated: valid" in res.output


def test_unavailable_embedder_is_a_clear_error(tmp_path):
    res = demo("eval", "--embedder", str(tmp_path / "no-such-model"))
    assert res.exit_code == 2
    assert "no such folder" in res.output and "--embedder lexical" in res.output


@pytest.mark.parametrize(
    "argv",
    [
        ["distill", "{src}", "--out", "{tmp}/d"],
        ["build", "{src}", "--out", "{tmp}/ds"],
        ["refine", "{src}", "--out", "{tmp}/r", "--backend", "dry-run"],
    ],
    ids=["distill", "build", "refine"],
)
def test_a_run_that_kept_nothing_exits_non_zero_with_its_reasons(argv, tmp_path):
    """Every input line rejected: the command says how many, the top reasons and where the rejects are, and
    exits non-zero (partial success stays 0, tested with each stage)."""
    from typer.testing import CliRunner

    from sdg_data.cli import app

    src = tmp_path / "in.jsonl"
    lines = [
        {"image_id": f"x{i}", "image_path": f"missing/{i}.png", "caption": "a cat", "defects": []} for i in range(3)
    ]
    src.write_text("".join(json.dumps(x) + "\n" for x in lines) + "{not json\n")
    r = CliRunner().invoke(app, [a.format(src=src, tmp=tmp_path) for a in argv])
    assert r.exit_code != 0, r.output
    assert "0 of 4" in r.output and "rejects.jsonl" in r.output, r.output
    assert "Traceback" not in r.output


def test_text_from_files_and_servers_prints_inert(tmp_path):
    """An annotator's name or a record id with terminal escapes (retitle, cursor moves, a bidi override) is shown
    as escapes in every command's output and errors, never sent raw to the terminal."""
    from sdg_data.io.cli_kit import printable

    assert printable("ann\x1b]0;pwned\x07\u202eevil\r\nok\tx") == "ann\\x1b]0;pwned\\x07\\u202eevil\\x0d\nok\tx"
    bad = tmp_path / "r.jsonl"
    bad.write_text(json.dumps({"image_id": "a\x1b[2J\x1b]0;x\x07", "caption": 5, "defects": []}) + "\n")
    res = runner.invoke(app, ["validate", str(bad)])
    assert res.exit_code != 0 and "\x1b" not in res.output and "\\x1b[2J" in res.output, res.output


@pytest.mark.parametrize("offline", [True, False])
def test_a_model_id_not_in_the_cache_is_one_line_at_once(tmp_path, monkeypatch, offline):
    """Whether the Hub is switched off or cannot be reached (a closed port here), an uncached id is one line that
    says how to get it and which flag takes a folder, before any retrying download."""
    import socket
    import subprocess
    import sys

    sdg = str(Path(sys.executable).parent / "sdg")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    env = {**os.environ, "HF_HUB_OFFLINE": "1" if offline else "0", "TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{port}",
           "HF_HOME": str(tmp_path / "hf")}  # fmt: skip
    gt = Path(__file__).resolve().parents[1] / "sdg_data" / "demo" / "gt.jsonl"
    res = subprocess.run([sdg, "eval", "--gt", str(gt), "--pred", str(gt), "--embedder", "someone/not-cached"],
                         capture_output=True, text=True, env=env)  # fmt: skip
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    why = "HF_HUB_OFFLINE is set" if offline else "the Hub is not reachable"
    assert "'someone/not-cached': no such folder here, and not in the local Hugging Face cache" in lines[0]
    assert why in lines[0]
    assert "hf download someone/not-cached" in lines[0] and "--embedder a local folder" in lines[0]
