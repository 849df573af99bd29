"""Distill keeps going past bad records, stops at once on a refused key, counts every run, and writes no key."""

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distill.config import DistillConfig
from distill.fake_teacher import FakeTeacher, FakeTeacherServer
from distill.runner import distill_file
from sdg_data.cli import app
from sdg_data.io.api_client import _retry_after
from tests.conftest import DEMO
from tests.test_distill import _api as _base_api


runner = CliRunner()
SAMPLE = DEMO / "sample" / "records.jsonl"
ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-test-0123456789-secret"


def _api(srv, **kw):
    """test_distill's loopback config, with the sample's images allowed and a little more patience."""
    return _base_api(srv, **{"timeout_s": 5.0, "max_in_flight": 4, "image_roots": [str(SAMPLE.parent)], **kw})


def _lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def _input(tmp_path, extra_lines=(), n=4, rename=None):
    lines = SAMPLE.read_text().splitlines()[:n]
    if rename:
        objs = [json.loads(x) for x in lines]
        for o in objs:
            o["image_id"] = rename(o["image_id"])
        lines = [json.dumps(o, ensure_ascii=False) for o in objs]
    p = tmp_path / "in.jsonl"
    if not (tmp_path / "images").exists():
        (tmp_path / "images").symlink_to(SAMPLE.parent / "images")  # allowed: it leads into an image root
    p.write_bytes(("\n".join(lines) + "\n").encode() + b"".join(x + b"\n" for x in extra_lines))
    return p


def test_bad_lines_and_bad_images_are_rejected_alone(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    bad_image = json.loads(SAMPLE.read_text().splitlines()[5])
    bad_image.update(image_id="broken", image_path=str(tmp_path / "broken.png"))
    src = _input(tmp_path, [b"{not json", b"\xff\xfe", json.dumps(bad_image).encode()])
    with FakeTeacherServer(FakeTeacher()) as srv:
        s = distill_file(src, tmp_path / "o", _api(srv, image_roots=[str(SAMPLE.parent), str(tmp_path)]))
    assert (s["read"], s["distilled"], s["rejected"]) == (7, 4, 3)
    rej = _lines(tmp_path / "o" / "distill.rejects.jsonl")
    assert [r["line"] for r in rej] == [5, 6, 7]
    assert "not valid JSON" in rej[0]["reason"] and "not valid UTF-8" in rej[1]["reason"]
    assert rej[2]["stage"] == "image" and "does not decode" in rej[2]["reason"]


def test_non_ascii_image_ids_reach_the_server_intact(tmp_path):
    src = _input(tmp_path, rename=lambda i: f"画像-{i}-é")
    with FakeTeacherServer(FakeTeacher()) as srv:
        s = distill_file(src, tmp_path / "o", _api(srv, max_retries=0))
        assert s["distilled"] == 4 and s["rejected"] == 0
        assert all(k.startswith("画像-") and k.endswith("-é") for k in srv.teacher.requests)
        assert set(srv.teacher.requests.values()) == {1}


@pytest.mark.parametrize(
    "value, want",
    [("2", 2.0), ("0.5", 0.5), ("soon", None), ("", None), ("-3", None), ("nan", None), ("Thu, 99 Foo 2026", None),
     ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)  # fmt: skip
def test_retry_after_that_is_neither_seconds_nor_a_date_falls_back_to_backoff(value, want):
    assert _retry_after({"retry-after": value}) == want


def test_garbage_retry_after_still_retries(tmp_path):
    teacher = FakeTeacher(fault_rate=0.5, faults=("429",), seed=2, retry_after="retry-after:whenever")
    with FakeTeacherServer(teacher) as srv:
        s = distill_file(_input(tmp_path), tmp_path / "o", _api(srv, max_retries=8))
    assert s["distilled"] == 4 and teacher.injected["429"] > 0


def test_a_refused_key_stops_the_run_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    teacher = FakeTeacher(fault_rate=1.0, faults=("401",))
    src = DEMO / "sample" / "records.jsonl"
    with FakeTeacherServer(teacher) as srv:
        res = runner.invoke(
            app,
            ["distill", str(src), "--out", str(tmp_path / "o"), "--teacher", "openai", "--base-url", srv.base_url,
             "--model", "m", "--max-in-flight", "2"],
        )  # fmt: skip
        sent = sum(teacher.requests.values())
    assert res.exit_code == 2, res.output
    lines = [x for x in res.output.splitlines() if x.startswith("error")]
    assert len(lines) == 1 and "refused the key (HTTP 401)" in lines[0] and KEY not in res.output
    assert sent <= 2  # the requests already in flight, not one per record


def test_a_key_echoed_by_the_server_is_never_written(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    teacher = FakeTeacher(fault_rate=1.0, faults=("echo",))
    with FakeTeacherServer(teacher) as srv:
        s = distill_file(_input(tmp_path), tmp_path / "o", _api(srv, max_retries=1))
    assert s["rejected"] == 4 and sum(teacher.requests.values()) == 8
    rej = _lines(tmp_path / "o" / "distill.rejects.jsonl")
    assert all("Authorization: Bearer ***" in r["reason"] for r in rej), rej[0]["reason"]
    for f in (tmp_path / "o").rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f
    from sdg_data.io.secrets import RedactingFilter

    handler = logging.StreamHandler(stream := __import__("io").StringIO())
    handler.addFilter(RedactingFilter())
    logging.getLogger("sdg-test").addHandler(handler)
    logging.getLogger("sdg-test").warning("server said %s", f"bad key {KEY}")
    assert KEY not in stream.getvalue() and "***" in stream.getvalue()


def test_a_resumed_run_accounts_for_the_killed_runs_requests(tmp_path):
    teacher = FakeTeacher(latency=0.15)
    src = DEMO / "sample" / "records.jsonl"
    out = tmp_path / "o"
    with FakeTeacherServer(teacher) as srv:
        args = [sys.executable, "-m", "sdg_data.cli", "distill", str(src), "--out", str(out), "--teacher", "openai",
                "--base-url", srv.base_url, "--model", "m", "--max-in-flight", "2"]  # fmt: skip
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if len(list((out / "cache").glob("*/*.json"))) >= 4:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.5)  # requests already on the wire reach the server's handlers
        first = sum(teacher.requests.values())
        assert 4 <= first < 24, "the run finished before it could be killed"
        s = distill_file(src, out, DistillConfig(teacher="openai", base_url=srv.base_url, model="m", progress=False))
        total = sum(teacher.requests.values())
    assert s["distilled"] == 24 and s["from_cache"] >= 4
    # every request the server saw is counted, the killed run's included (an attempt that never reached the
    # server, a refused connection on a loaded box, is counted as sent)
    assert s["requests"] >= total and s["requests"] - s["this_run"]["requests"] >= first
    assert s["prompt_tokens"] > s["this_run"]["prompt_tokens"] > 0


class _EchoHub(BaseHTTPRequestHandler):
    """A loopback "Hub" that refuses every call and echoes the Authorization header in its error body."""

    def log_message(self, *args):
        pass

    def _refuse(self):
        body = json.dumps({"error": f"denied for {self.headers.get('Authorization')}"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = _refuse  # noqa: N815


def test_push_to_hub_failure_is_one_line_without_the_body(tmp_path):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHub)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        distill_file(SAMPLE, tmp_path / "d", DistillConfig(progress=False))
        env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{httpd.server_address[1]}", "HF_TOKEN": KEY,
               "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf")}  # fmt: skip
        res = subprocess.run(
            [sys.executable, "-m", "sdg_data.cli", "build", str(tmp_path / "d" / "distilled.jsonl"), "--out",
             str(tmp_path / "ds"), "--image-root", str(DEMO), "--push-to-hub", "someone/sdg-test"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        httpd.shutdown()
    assert res.returncode == 2, res.stderr[-2000:]
    err = [x for x in res.stderr.splitlines() if x.startswith("error")]
    assert len(err) == 1 and "push to the Hub failed" in err[0] and "HTTP 401" in err[0], res.stderr
    assert KEY not in res.stdout + res.stderr and "denied" not in res.stderr


@pytest.mark.parametrize(
    "shape",
    [
        "verbatim",
        "newline",
        "escaped newline",
        "folded",
        "basic auth",
        "base64 offset 1",
        "base64 offset 2",
        "urlsafe",
    ],
)
def test_a_key_is_masked_in_every_form_a_server_echoes_it(monkeypatch, shape):
    """A key split by a newline (or a JSON-escaped one), folded by a proxy, or base64-encoded inside an echoed
    header (Basic credentials) at any byte offset is masked; the whole base64 token goes."""
    import base64

    from sdg_data.io.secrets import redact

    key = "sk-live-9f8e7d6c5b4a3f2e1d0c"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    text = {
        "verbatim": f"echo {key} end",
        "newline": f"echo {key[:9]}\n{key[9:]} end",
        "escaped newline": f"echo {key[:9]}\\n{key[9:]} end",
        "folded": f"echo {key[:12]}\r\n  {key[12:]} end",
        "basic auth": f"Authorization: Basic {b64(b'user:' + key.encode())} end",
        "base64 offset 1": f"h {b64(b'x' + key.encode() + b'yz')} end",
        "base64 offset 2": f"h {b64(b'xy' + key.encode())} end",
        "urlsafe": f"h {base64.urlsafe_b64encode(b'?' + key.encode()).decode()} end",
    }[shape]
    out = redact(text)
    assert out.endswith(" end") and "***" in out, out
    assert key not in out.replace("\n", "").replace("\\n", "").replace(" ", "").replace("\r", "")
    for decoded in (text.split()[-2],):
        assert decoded not in out or shape in ("verbatim", "newline", "escaped newline", "folded")
    assert redact("an ordinary sk-live line") == "an ordinary sk-live line"
