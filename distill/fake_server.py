"""A loopback chat-completions server that plays the teacher, for tests and benchmarks (never for data).

It answers from the facts block of the request with the template teacher, after a set latency, and injects
faults at a set rate: HTTP 500, 429 with Retry-After, a hang past the client's timeout, a body that is not
JSON, a reply that moves one box or drops one. ``bad_ids`` always get a moved box. Every request is logged by
the ``X-SDG-Image-Id`` header so tests can prove nothing is asked twice.

    python -m distill.fake_server --port 8000 --latency 0.2 --fault-rate 0.1
"""

from __future__ import annotations

import argparse
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from distill import template_teacher
from distill.prompting import read_facts


FAULTS = ("500", "429", "timeout", "malformed", "moved", "dropped")
# on request only (never drawn at random): every request refused (401), or a 500 whose body echoes the request's
# Authorization header, as some proxies do (so tests can prove the key never reaches what we write)
EXTRA_FAULTS = ("401", "echo")


class FakeTeacher:
    def __init__(
        self,
        latency: float = 0.0,
        fault_rate: float = 0.0,
        faults: tuple[str, ...] = FAULTS,
        seed: int = 0,
        bad_ids: tuple[str, ...] = (),
        hang_s: float = 2.0,
        retry_after: str = "retry-after-ms:50",
        responder: Callable[[dict[str, Any], str], str] | None = None,
    ):
        unknown = set(faults) - set(FAULTS) - set(EXTRA_FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
        self.latency, self.fault_rate, self.faults = latency, fault_rate, faults
        self.rng = random.Random(seed)
        self.bad_ids = set(bad_ids)
        self.hang_s = hang_s
        self.retry_after = retry_after
        self.responder = responder  # (request body, image id) -> reply text; default: play the teacher
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.log: list[tuple[str, str]] = []  # (image id, outcome) in arrival order

    def pick_fault(self, image_id: str) -> str | None:
        with self.lock:
            self.requests[image_id] += 1
            fault = self.rng.choice(self.faults) if self.faults and self.rng.random() < self.fault_rate else None
            if fault is None and image_id in self.bad_ids:
                fault = "moved"
            if fault:
                self.injected[fault] += 1
            self.log.append((image_id, fault or "ok"))
            return fault


def _reply_text(body: dict[str, Any], fault: str | None) -> str:
    system = next(m["content"] for m in body["messages"] if m["role"] == "system")
    user = next(m for m in body["messages"] if m["role"] == "user")
    text = "".join(b.get("text", "") for b in user["content"] if b.get("type") == "text")
    fact_list = read_facts(text)
    caption = re.search(r'Caption: "(.*)"', text).group(1)
    lo, hi = (int(x) for x in re.search(r"English, (\d+) to (\d+) words", system).groups())
    keep = "keep that number" in system
    if fault == "moved" and fact_list:
        b = fact_list[0]["box_2d"]
        fact_list[0] = {**fact_list[0], "box_2d": [min(b[0] + 37, b[2] - 1), b[1], b[2], b[3]]}
    elif fault == "dropped" and fact_list:
        fact_list = fact_list[1:]
    return template_teacher.respond(caption, fact_list, lo, hi, keep)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in separate writes: Nagle + delayed ACK would add 40 ms

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, code: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:  # noqa: N802
        teacher: FakeTeacher = self.server.teacher  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not self.path.rstrip("/").endswith("/chat/completions"):
            return self._send(404, b'{"error": {"message": "not found"}}')
        image_id = unquote(self.headers.get("X-SDG-Image-Id", "?"))  # the client percent-encodes it
        fault = teacher.pick_fault(image_id)
        time.sleep(teacher.latency)
        if fault == "401":
            return self._send(401, b'{"error": {"message": "invalid api key", "type": "invalid_request_error"}}')
        if fault == "echo":
            auth = self.headers.get("Authorization", "")
            msg = json.dumps({"error": {"message": f"upstream failed for request with Authorization: {auth}"}})
            return self._send(500, msg.encode())
        if fault == "500":
            return self._send(500, b'{"error": {"message": "injected server error", "type": "server_error"}}')
        if fault == "429":
            name, value = teacher.retry_after.split(":", 1)
            return self._send(429, b'{"error": {"message": "injected rate limit"}}', {name: value})
        if fault == "timeout":
            time.sleep(teacher.hang_s)
        if fault == "malformed":
            return self._send(200, b'{"id": "x", "choices": [{"message": {"content": "trunc')
        body = json.loads(raw)
        text = teacher.responder(body, image_id) if teacher.responder else _reply_text(body, fault)
        out = {
            "id": f"chatcmpl-{image_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {
                "prompt_tokens": len(raw) // 4,
                "completion_tokens": len(text) // 4,
                "total_tokens": len(raw) // 4 + len(text) // 4,
            },
        }
        try:
            self._send(200, json.dumps(out).encode())
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout fault)
            pass


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # many clients connect at once; the default backlog of 5 refuses some


class FakeTeacherServer:
    """``with FakeTeacherServer(FakeTeacher(...)) as srv: srv.base_url`` -> ``http://127.0.0.1:PORT/v1``."""

    def __init__(self, teacher: FakeTeacher | None = None, port: int = 0):
        self.teacher = teacher or FakeTeacher()
        self.httpd = _Server(("127.0.0.1", port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.teacher = self.teacher  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeTeacherServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--fault-rate", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    srv = FakeTeacherServer(FakeTeacher(args.latency, args.fault_rate, seed=args.seed), args.port)
    print(srv.base_url, flush=True)
    srv.httpd.serve_forever()


if __name__ == "__main__":
    main()
