"""Distill against the template teacher and, through the real openai client, a loopback chat-completions server."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.checks import STEP_HEADINGS
from distill.config import DistillConfig
from distill.fake_teacher import FakeTeacher, FakeTeacherServer
from distill.runner import distill_file
from sdg_data.io.jsonl import read_records
from sdg_data.records import count_words
from tests.conftest import DEMO


SAMPLE = DEMO / "sample" / "records.jsonl"


def _lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def _api(srv, **kw):
    base = dict(
        teacher="openai",
        base_url=srv.base_url,
        model="fake-vlm",
        progress=False,
        timeout_s=1.0,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
        max_in_flight=8,
    )
    return DistillConfig(**{**base, **kw})


def test_template_teacher_keeps_human_boxes_and_writes_the_three_steps(tmp_path):
    s = distill_file(SAMPLE, tmp_path / "a", DistillConfig(progress=False))
    assert s["read"] == s["distilled"] == 24 and s["rejected"] == 0 and s["requests"] == 0
    human = {r.image_id: r for r in read_records(SAMPLE)}
    for rec in read_records(tmp_path / "a" / "distilled.jsonl"):
        src = human[rec.image_id]
        assert sorted((d.box.to_grid(), d.label) for d in rec.defects) == sorted(
            (d.box.to_grid(), d.label) for d in src.defects
        )
        assert all(h in rec.think for h in STEP_HEADINGS)
        for d in rec.defects:
            assert 18 <= count_words(d.description) <= 45 and 1 <= d.importance <= 100
            assert d.provenance["annotator_description"] in {x.description for x in src.defects}
        assert rec.provenance["distill"]["teacher"] == "template"
        assert (tmp_path / "a" / rec.image_path).exists()  # paths resolve from the output folder
    # deterministic: a second run into a fresh folder gives the same file
    distill_file(SAMPLE, tmp_path / "b", DistillConfig(progress=False))
    assert (tmp_path / "a" / "distilled.jsonl").read_text() == (tmp_path / "b" / "distilled.jsonl").read_text()


def test_api_teacher_through_openai_client_and_cache_on_rerun(tmp_path):
    with FakeTeacherServer(FakeTeacher(latency=0.01)) as srv:
        # no faults here, so a generous timeout: a loaded CI box must not turn a slow reply into a retry
        s = distill_file(SAMPLE, tmp_path / "api", _api(srv, usd_per_mtok_in=1.0, usd_per_mtok_out=2.0, timeout_s=30))
        assert s["distilled"] == 24 and s["requests"] == 24 and sum(srv.teacher.requests.values()) == 24
        assert set(srv.teacher.requests) == {r.image_id for r in read_records(SAMPLE)}  # the image id header
        assert s["prompt_tokens"] > 0 and s["cost_usd"] > 0
        again = distill_file(SAMPLE, tmp_path / "api", _api(srv))
        assert again["this_run"]["requests"] == 0 and again["from_cache"] == 24
        assert sum(srv.teacher.requests.values()) == 24 == again["requests"]  # the summary counts every run
    distill_file(SAMPLE, tmp_path / "t", DistillConfig(progress=False))
    template = _lines(tmp_path / "t" / "distilled.jsonl")
    api = _lines(tmp_path / "api" / "distilled.jsonl")
    assert [r["defects"] for r in api] == [r["defects"] for r in template]
    assert api[0]["provenance"]["distill"]["model"] == "fake-vlm"


def test_faults_in_ten_percent_of_requests_every_record_accounted_for(tmp_path):
    teacher = FakeTeacher(latency=0.005, fault_rate=0.1, seed=3, hang_s=0.6, bad_ids=("demo-05",))
    with FakeTeacherServer(teacher) as srv:
        s = distill_file(SAMPLE, tmp_path / "f", _api(srv, timeout_s=0.3, max_attempts=3, max_retries=5))
    assert s["read"] == 24 == s["distilled"] + s["rejected"]
    rejects = _lines(tmp_path / "f" / "distill.rejects.jsonl")
    assert [r["image_id"] for r in rejects] == ["demo-05"]  # its reply always moves a box
    assert rejects[0]["stage"] == "teacher" and "boxes" in rejects[0]["reason"]
    assert s["rule_retries"] >= 2 and s["transient_retries"] >= 1
    assert sum(teacher.injected.values()) >= 3


def test_every_fault_kind_is_survived(tmp_path):
    for kind in ("500", "429", "timeout", "malformed", "moved", "dropped"):
        teacher = FakeTeacher(fault_rate=0.5, faults=(kind,), seed=1, hang_s=0.5)
        with FakeTeacherServer(teacher) as srv:
            s = distill_file(SAMPLE, tmp_path / kind, _api(srv, timeout_s=0.25, max_attempts=8, max_retries=8))
        assert s["distilled"] == 24 and s["rejected"] == 0, (kind, s)
        assert teacher.injected[kind] > 0


def _one_record(tmp_path: Path) -> Path:
    """The sample's first record alone, in a folder beside the sample's images."""
    one = tmp_path / "one.jsonl"
    one.write_text(SAMPLE.read_text().splitlines()[0] + "\n")
    (tmp_path / "images").symlink_to(SAMPLE.parent / "images")
    return one


def test_retry_after_is_honoured_and_transport_failures_are_not_cached(tmp_path):
    teacher = FakeTeacher(fault_rate=1.0, faults=("429",), retry_after="retry-after:0.3")
    one = _one_record(tmp_path)
    with FakeTeacherServer(teacher) as srv:
        t0 = time.perf_counter()
        cfg = _api(srv, max_retries=2, backoff_max_s=5.0, image_roots=[str(SAMPLE.parent)])
        s = distill_file(one, tmp_path / "o", cfg)
        assert time.perf_counter() - t0 >= 0.6  # two waits of the server's 0.3 s, not our 10 ms backoff
        assert s["rejected"] == 1 and s["requests"] == 3
        (r,) = _lines(tmp_path / "o" / "distill.rejects.jsonl")
        assert r["stage"] == "transport" and "429" in r["reason"]
        s = distill_file(one, tmp_path / "o", _api(srv, max_retries=0, image_roots=[str(SAMPLE.parent)]))
        assert s["this_run"]["requests"] == 1  # asked again: a transport failure is not a verdict
        assert s["requests"] == 4  # and the summary accounts for both runs


def test_a_servers_retry_after_is_bounded_by_backoff_max(tmp_path, monkeypatch):
    """A server that asks for an hour's wait does not override the user's --backoff-max-s: every wait the client
    asks for is at most 0.05 s (the waits are recorded, not timed)."""
    import asyncio

    import sdg_data.io.api_client as api

    waits: list[float] = []
    real = asyncio.sleep

    async def sleep(delay, *a, **kw):
        waits.append(delay)
        return await real(delay, *a, **kw)

    monkeypatch.setattr(api.asyncio, "sleep", sleep)
    teacher = FakeTeacher(fault_rate=1.0, faults=("429",), retry_after="retry-after:3600")
    one = _one_record(tmp_path)
    with FakeTeacherServer(teacher) as srv:
        s = distill_file(one, tmp_path / "o", _api(srv, max_retries=3, image_roots=[str(SAMPLE.parent)]))
    assert s["requests"] == 4 and len(waits) == 3 and max(waits) <= 0.05, waits


def test_bad_input_lines_are_rejected_with_record_and_field(tmp_path):
    lines = SAMPLE.read_text().splitlines()[:3]
    a, b = json.loads(lines[1]), json.loads(lines[2])
    a["caption"] = None
    b["image_path"] = "images/missing.png"
    (tmp_path / "in.jsonl").write_text("\n".join([lines[0], json.dumps(a), json.dumps(b), lines[0]]) + "\n")
    (tmp_path / "images").symlink_to(SAMPLE.parent / "images")
    s = distill_file(
        tmp_path / "in.jsonl", tmp_path / "o", DistillConfig(progress=False, image_roots=[str(SAMPLE.parent)])
    )
    assert s["read"] == 4 and s["distilled"] == 1 and s["rejected"] == 3
    reasons = [r["reason"] for r in _lines(tmp_path / "o" / "distill.rejects.jsonl")]
    assert "'caption': missing" in reasons[0] and "'image_path'" in reasons[1] and "duplicate" in reasons[2]


def test_sigkill_midway_then_rerun_loses_and_repeats_nothing(tmp_path):
    teacher = FakeTeacher(latency=0.15)
    with FakeTeacherServer(teacher) as srv:
        cmd = [
            sys.executable,
            "-m",
            "sdg_data.cli",
            "distill",
            str(SAMPLE),
            "--out",
            str(tmp_path / "k"),
            "--teacher",
            "openai",
            "--base-url",
            srv.base_url,
            "--model",
            "fake-vlm",
            "--max-in-flight",
            "2",
        ]
        env = {**os.environ, "OPENAI_API_KEY": "test-key"}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cache = tmp_path / "k" / "cache"
        deadline = time.time() + 60
        while time.time() < deadline and len(list(cache.rglob("*.json"))) < 8:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done = {json.loads(p.read_text())["record"]["image_id"] for p in cache.rglob("*.json")}
        assert 8 <= len(done) < 24
        before = dict(teacher.requests)
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        second = {k: v - before.get(k, 0) for k, v in teacher.requests.items() if v - before.get(k, 0)}
        assert not set(second) & done  # nothing finished before the kill was asked again
        assert set(second) | done == {r.image_id for r in read_records(SAMPLE)}
        assert all(n == 1 for n in second.values())
        subprocess.run([*cmd[:6], str(tmp_path / "u"), *cmd[7:]], env=env, check=True, capture_output=True)
    assert (tmp_path / "k" / "distilled.jsonl").read_text() == (tmp_path / "u" / "distilled.jsonl").read_text()


@pytest.mark.parametrize("bad", [{"max_in_flight": 0}, {"min_words": 50, "max_words": 10}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        DistillConfig(**bad)


def test_the_template_teacher_cuts_a_long_note_in_log_many_counts(monkeypatch):
    """A 250 KB annotator note costs O(n log n): the cut to max_words counts words a logarithmic number of times
    (it was once per dropped word, quadratic), and keeps the longest prefix within the limit."""
    import distill.template_teacher as tt

    calls = []
    real = tt.count_words
    monkeypatch.setattr(tt, "count_words", lambda text: calls.append(1) or real(text))
    note = "word " * 50_000
    text = tt.describe({"box_2d": [100, 100, 300, 300], "label": "artifact", "annotator_note": note}, 18, 45)
    assert real(text) == 45 and text.endswith(".") and len(calls) < 40
    short = tt.describe({"box_2d": [100, 100, 300, 300], "label": "artifact", "annotator_note": "a hand"}, 18, 45)
    assert 18 <= real(short) <= 45
