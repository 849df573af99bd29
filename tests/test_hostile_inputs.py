"""Hostile model output and hostile input files: nothing raises on data; every reader gives one clear line."""

import json
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sdg_data.answer import ParseResult, parse_response, render_response
from sdg_data.cli import app
from sdg_data.io.jsonl import read_records
from sdg_data.scoring.embedding import CachedEmbedder, LexicalEmbedder
from sdg_data.scoring.reward import RewardConfig, reward_batch
from tests.conftest import DEMO, defect


runner = CliRunner()
GT = [defect([100, 100, 400, 500], "artifact", "six fingers on the left hand", 60)]
VALID = render_response("looked at the hand", GT)

# values that broke the parser or the reward before: non-finite and enormous numbers, wrong JSON types, depth
HOSTILE_VALUES = [
    "1e999",
    "-1e999",
    "NaN",
    "Infinity",
    '"inf"',
    '"nan"',
    "9" * 400,
    "-" + "9" * 400,
    "9" * 5000,
    '["artifact"]',
    '{"label": "artifact"}',
    "null",
    "true",
    '"\\ud800"',
    "[" * 20000 + "]" * 20000,
    "[[[[1]]]]",
    '"' + "x" * 5000 + '"',
    "1.5",
    "0.25",
]
FIELDS = ["box_2d", "label", "description", "importance", "box_el0", "box_el3", "item", "answer"]


def mutate(field: str, value: str) -> str:
    item = {"box_2d": [100, 100, 400, 500], "label": "artifact", "description": "x y z", "importance": 60}
    if field == "item":
        body = f"[{value}]"
    elif field == "answer":
        body = value
    elif field.startswith("box_el"):
        box = ["@0", "@1", "@2", "@3"]
        body = json.dumps([{**item, "box_2d": box}])
        for k, v in enumerate([100, 100, 400, 500]):
            body = body.replace(f'"@{k}"', value if k == int(field[-1]) else str(v))
    else:
        body = json.dumps([{**item, field: "@@"}]).replace('"@@"', value)
    return f"<think>checked</think><answer>{body}</answer>"


def check_result(res: ParseResult) -> None:
    assert isinstance(res, ParseResult) and isinstance(res.format_ok, bool)
    for d in res.defects:  # what the parser hands the scorer is always usable
        assert all(math.isfinite(v) and 0 <= v <= 1000 for v in d.box)
        assert d.label in ("artifact", "misalignment") and isinstance(d.description, str)
        d.description.encode("utf-8")  # no lone surrogates reach the embedder
        assert d.importance is None or 1 <= d.importance <= 100


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", HOSTILE_VALUES, ids=lambda v: v[:12])
def test_parser_gives_a_verdict_for_every_hostile_value(field, value):
    check_result(parse_response(mutate(field, value)))
    check_result(parse_response(mutate(field, value).replace("</answer>", "")))  # truncated too


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_parser_never_raises_on_arbitrary_text(text):
    check_result(parse_response(text))
    check_result(parse_response("<think>a</think><answer>" + text))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_parser_never_raises_on_mutated_valid_answers(data):
    chars = list(VALID)
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["insert", "delete", "replace", "value"]))
        if op == "value":
            at = data.draw(st.integers(0, len(chars)))
            chars[at:at] = list(data.draw(st.sampled_from(HOSTILE_VALUES))[:300])
        elif op == "delete" and chars:
            del chars[data.draw(st.integers(0, len(chars) - 1))]
        else:
            at = data.draw(st.integers(0, len(chars)))
            ch = data.draw(st.sampled_from(list('[]{}",:.-e0123456789 \\<>/') + ["\u2028", "\ud800", "\x00"]))
            if op == "replace" and at < len(chars):
                chars[at] = ch
            else:
                chars.insert(at, ch)
    check_result(parse_response("".join(chars)))


def test_one_hostile_completion_scores_minus_one_and_the_batch_goes_on():
    emb = CachedEmbedder(LexicalEmbedder())
    cfg = RewardConfig()
    rng = random.Random(0)
    hostile = [mutate(rng.choice(FIELDS), v) for v in HOSTILE_VALUES]
    batch = [VALID, *hostile, VALID]
    out = reward_batch(batch, [GT] * len(batch), emb, cfg)
    alone = reward_batch([VALID], [GT], emb, cfg)[0]
    assert out[0].reward == out[-1].reward == alone.reward and alone.reward > 0.9
    for r in out[1:-1]:
        assert math.isfinite(r.reward) and -1.0 <= r.reward <= 1.0
    assert sum(r.case == "format_fail" and r.reward == cfg.format_fail for r in out) >= len(hostile) // 2


# ---------------------------------------------------------------------------------------------- input files
GOOD = {"image_id": "a", "defects": [{"box_2d": [1, 2, 300, 400], "label": "artifact", "description": "x"}]}


def _line(obj_or_text) -> bytes:
    return obj_or_text if isinstance(obj_or_text, bytes) else json.dumps(obj_or_text).encode()


BAD_LINES = {
    "latin-1": (b'{"image_id": "caf\xe9", "defects": []}', "not valid UTF-8"),
    "binary": (b"\x89PNG\r\x1a\x00\x00\xff\xfe", "not valid UTF-8"),
    "deep": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    "400 digits": (
        json.dumps(GOOD).replace("300", "9" * 400).encode(),
        "field 'defects[0].box_2d': box_2d holds a number too large",
    ),
    "surrogate id": (b'{"image_id": "x\\ud800", "defects": []}', "field 'image_id': holds a lone surrogate"),
    "normalised": (
        json.dumps({**GOOD, "defects": [{**GOOD["defects"][0], "box_2d": [0.1, 0.2, 0.5, 0.6]}]}).encode(),
        "looks normalised to 0-1",
    ),
    "NaN importance": (
        json.dumps(GOOD).replace('"description": "x"', '"description": "x", "importance": NaN').encode(),
        "field 'defects[0].importance'",
    ),
    "list label": (
        json.dumps(GOOD).replace('"artifact"', '["artifact"]').encode(),
        "field 'defects[0].label'",
    ),
    "empty description": (
        json.dumps(GOOD).replace('"description": "x"', '"description": " "').encode(),
        "field 'defects[0].description': is empty",
    ),
}


def _file(tmp_path, name, *lines):
    p = tmp_path / name
    p.write_bytes(b"\n".join(_line(x) for x in lines) + b"\n")
    return p


@pytest.mark.parametrize("case", BAD_LINES)
@pytest.mark.parametrize("cmd", ["validate", "eval-gt", "reward-gt", "eval-pred"])
def test_every_reader_gives_one_line_with_file_line_and_reason(tmp_path, cmd, case):
    raw, why = BAD_LINES[case]
    raw = raw.replace(b'"image_id": "a"', b'"image_id": "b"')
    bad = _file(tmp_path, "bad.jsonl", GOOD, raw)
    good = _file(tmp_path, "good.jsonl", GOOD, {**GOOD, "image_id": "b"})
    args = {
        "validate": ["validate", str(bad)],
        "eval-gt": ["eval", "--gt", str(bad), "--pred", str(good), "--embedder", "none"],
        "reward-gt": ["reward", "--gt", str(bad), "--pred", str(good), "--out", str(tmp_path / "r.jsonl")],
        "eval-pred": ["eval", "--gt", str(good), "--pred", str(bad), "--embedder", "none"],
    }[cmd]
    res = runner.invoke(app, args)
    if cmd == "eval-pred" and case in ("NaN importance", "list label", "empty description", "400 digits"):
        # prediction defects go through the model-output parser: a verdict (a format failure or a dropped
        # importance, as the paper's parser rules), not an error
        assert res.exit_code == 0 and "predictions: 2 lines" in res.output, res.output
        if case in ("list label", "400 digits"):
            assert "1 format failures" in res.output
        return
    assert res.exit_code == 2, res.output
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit)
    lines = [x for x in res.output.splitlines() if x.strip()]
    if cmd == "validate":  # validate reads on: each bad line (file:line: reason), then the counts
        assert len(lines) == 2 and lines[0].startswith(f"{bad}:2: ") and why in lines[0], res.output
        assert lines[1].endswith("1 of 2 lines bad"), res.output
        return
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "bad.jsonl:2: " in lines[0]
    assert why in lines[0], lines[0]


def test_prediction_files_score_hostile_values_as_format_failures(tmp_path):
    gt = _file(tmp_path, "gt.jsonl", GOOD, {**GOOD, "image_id": "b"})
    pred = _file(tmp_path, "p.jsonl", GOOD, json.dumps({**GOOD, "image_id": "b"}).replace("300", "9" * 400).encode())
    out = tmp_path / "r.jsonl"
    res = runner.invoke(app, ["reward", "--gt", str(gt), "--pred", str(pred), "--out", str(out), "--embedder", "none"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["format_ok"] for r in rows] == [True, False] and rows[1]["reward"] == -1.0


def test_u2028_inside_a_string_is_not_a_line_break(tmp_path):
    rec = {**GOOD, "caption": "a\u2028b\u2029c\x85d"}
    p = tmp_path / "r.jsonl"
    p.write_text(json.dumps(rec, ensure_ascii=False) + "\n" + json.dumps({**rec, "image_id": "b"}, ensure_ascii=False))
    recs = read_records(p)
    assert [r.caption for r in recs] == ["a\u2028b\u2029c\x85d"] * 2
    res = runner.invoke(app, ["validate", str(p)])
    assert res.exit_code == 0 and "2 records" in res.output


def test_importer_rejects_bad_lines_and_normalised_boxes(tmp_path):
    row = {"filepath": "images/flux/1.png", "caption": "a cat", "generator": "FLUX.2-dev"}
    items = [{"box_2d": [0.1, 0.2, 0.5, 0.6], "label": "artifact", "description": "paw", "importance": 20}]
    src = _file(
        tmp_path, "test.jsonl", {**row, "ann_translated_bboxes": items}, b"\xff\xfe not json", {**row, "filepath": 3}
    )
    res = runner.invoke(app, ["import-sdg30k", str(src), "--out", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 2 and "kept 0 of 3 rows" in res.output, res.output  # a run that kept nothing fails
    rej = [json.loads(x) for x in (tmp_path / "o.import.rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rej] == [1, 2, 3]
    assert "looks normalised to 0-1" in rej[0]["reason"] and "not valid UTF-8" in rej[1]["reason"]
    assert "read 3: wrote 0" in res.output


@pytest.mark.parametrize("suffix", [".jsonl", ".txt"])
def test_generate_prompt_files_reject_bad_lines_alone(tmp_path, suffix):
    from sdg_data.generate.prompts import read_prompts

    if suffix == ".jsonl":
        raw = [b'{"prompt": "a red car"}', b"\xe9t\xe9", b"[" * 50000, '{"prompt": "two\u2028cats"}'.encode()]
    else:
        raw = [b"a red car", b"\xe9t\xe9", "two\u2028cats".encode()]
    p = tmp_path / f"p{suffix}"
    p.write_bytes(b"\n".join(raw) + b"\n")
    prompts, rejects, n = read_prompts(str(p))
    assert [x.text for x in prompts] == ["a red car", "two\u2028cats"]
    assert n == len(prompts) + len(rejects) == len(raw)
    assert all("UTF-8" in r.reason or "nested" in r.reason for r in rejects)


def test_empty_inputs_are_errors_where_nothing_would_be_done(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    good = _file(tmp_path, "good.jsonl", GOOD)
    other = _file(tmp_path, "other.jsonl", {**GOOD, "image_id": "zzz"})
    for args, why in (
        (["validate", str(empty)], "no records"),
        (["eval", "--gt", str(empty), "--pred", str(good), "--embedder", "none"], "no annotated ground-truth records"),
        (["eval", "--gt", str(good), "--pred", str(other), "--embedder", "none"], "no prediction for any"),
        (["eval", "--gt", str(good), "--pred", str(empty), "--embedder", "none"], "no prediction for any"),
        (["reward", "--gt", str(good), "--pred", str(empty), "--out", str(tmp_path / "r")], "no predictions"),
        (["build", str(empty), "--out", str(tmp_path / "ds")], "nothing to build"),
        (["distill", str(empty), "--out", str(tmp_path / "d")], "nothing to distill"),
        (["import-sdg30k", str(empty), "--out", str(tmp_path / "i.jsonl")], "nothing to import"),
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and why in res.output, (args, res.output)


def test_validate_reads_per_annotation_files(tmp_path):
    recs = [{**GOOD, "provenance": {"annotator": who}} for who in ("a@x", "b@x")]
    p = _file(tmp_path, "pull.all.jsonl", *recs)
    res = runner.invoke(app, ["validate", str(p)])
    assert res.exit_code == 0 and "2 annotations of 1 images" in res.output, res.output
    res = runner.invoke(app, ["validate", str(p), "--per-image"])
    assert res.exit_code == 2 and "duplicate of line 1" in res.output
    q = _file(tmp_path, "plain.jsonl", *recs)
    assert runner.invoke(app, ["validate", str(q), "--per-annotation"]).exit_code == 0


def test_demo_files_still_validate():
    assert runner.invoke(app, ["validate", str(DEMO / "gt.jsonl")]).exit_code == 0


@pytest.mark.parametrize("case", BAD_LINES)
def test_distill_and_build_reject_each_bad_line_alone(tmp_path, case):
    from distill.config import DistillConfig
    from distill.runner import distill_file
    from sdg_data.dataset.build import BuildConfig, build_dataset

    raw, _ = BAD_LINES[case]
    lines = (DEMO / "sample" / "records.jsonl").read_bytes().splitlines()[:6]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join([*lines[:3], raw, *lines[3:]]) + b"\n")
    (tmp_path / "images").symlink_to(DEMO / "sample" / "images")
    roots = [str(tmp_path), str(DEMO)]
    s = distill_file(src, tmp_path / "d", DistillConfig(progress=False, image_roots=roots))
    assert (s["read"], s["distilled"], s["rejected"]) == (7, 6, 1)
    (rej,) = [json.loads(x) for x in (tmp_path / "d" / "distill.rejects.jsonl").read_text().splitlines()]
    assert rej["line"] == 4 and rej["reason"]
    built = (tmp_path / "d" / "distilled.jsonl").read_bytes().splitlines()
    src = tmp_path / "d" / "b.jsonl"  # beside distilled.jsonl: its image paths are relative to that folder
    src.write_bytes(b"\n".join([*built[:2], raw, *built[2:]]) + b"\n")
    b = build_dataset(src, tmp_path / "ds", BuildConfig(image_roots=roots), progress=False)
    assert (b["read"], b["built"], b["rejected"]) == (7, 6, 1)
    (rej,) = [json.loads(x) for x in (tmp_path / "ds" / "meta" / "build.rejects.jsonl").read_text().splitlines()]
    assert rej["line"] == 3
