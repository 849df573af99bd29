"""A loopback OpenAI-compatible chat-completions server for tests and benchmarks (never for data).

It answers with a responder (``(request body, image id, fault) -> reply text``; distill's fake teacher plays the
teacher from the request's facts block) after a set latency, and injects faults at a set rate: HTTP 500, 429
with Retry-After, a hang past the client's timeout, a body that is not JSON, and the responder's own (a reply
that moves one box or drops one). ``bad_ids`` always get a ``moved`` reply. On request only: 401 for every call,
or a 500 that echoes the Authorization header. Every request is logged by the ``X-SDG-Image-Id`` header so tests
can prove nothing is asked twice.

    python -m distill.fake_teacher --port 8000 --latency 0.2 --fault-rate 0.1     (the teacher)
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote


FAULTS = ("500", "429", "timeout", "malformed", "moved", "dropped")
# on request only (never drawn at random): every request refused (401), or a 500 whose body echoes the request's
# Authorization header, as some proxies do (so tests can prove the key never reaches what we write)
EXTRA_FAULTS = ("401", "echo")


FIXED_REPLY = (
    '<think>looked</think><answer>[{"box_2d": [100, 100, 300, 300], "label": "artifact", '
    '"description": "a smeared hand", "importance": 50}]</answer>'
)


def fixed_reply(body: dict[str, Any], image_id: str, fault: str | None) -> str:
    """The default responder: one valid SDG answer, whatever was asked."""
    return FIXED_REPLY


class LoopbackChat:
    """What the server does: which fault a request gets, what it answers, and the log of every request."""

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
        self.responder = responder  # (request body, image id) -> reply text, for tests that script the replies
        self.default_reply: Callable[[dict[str, Any], str, str | None], str] = fixed_reply
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

    def reply(self, body: dict[str, Any], image_id: str, fault: str | None) -> str:
        return self.responder(body, image_id) if self.responder else self.default_reply(body, image_id, fault)


class JSONHandler(BaseHTTPRequestHandler):
    """Quiet, keep-alive, JSON replies: what every loopback server's handler shares."""

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


class _Handler(JSONHandler):
    def do_POST(self) -> None:  # noqa: N802
        teacher: LoopbackChat = self.server.teacher  # type: ignore[attr-defined]
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
        text = teacher.reply(body, image_id, fault)
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


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 in a background thread, its handler reading ``state`` from the server:
    ``with Subclass(state) as srv: srv.base_url`` -> ``http://127.0.0.1:PORT/v1``."""

    handler: type[BaseHTTPRequestHandler]
    state_name: str

    def __init__(self, state: Any, port: int = 0):
        self.httpd = _Server(("127.0.0.1", port), self.handler)
        self.httpd.daemon_threads = True
        setattr(self.httpd, self.state_name, state)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class LoopbackChatServer(LoopbackServer):
    """``with LoopbackChatServer(LoopbackChat(...)) as srv: srv.base_url`` -> ``http://127.0.0.1:PORT/v1``."""

    handler, state_name = _Handler, "teacher"

    def __init__(self, teacher: LoopbackChat | None = None, port: int = 0):
        self.teacher = teacher or LoopbackChat()
        super().__init__(self.teacher, port)


def serve(teacher: LoopbackChat, port: int = 0) -> None:
    """Run in the foreground, printing the base URL first (benchmarks start it in its own process)."""
    srv = LoopbackChatServer(teacher, port)
    print(srv.base_url, flush=True)
    srv.httpd.serve_forever()


def cli_args(description: str):
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--fault-rate", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


if __name__ == "__main__":
    a = cli_args(__doc__)
    serve(LoopbackChat(a.latency, a.fault_rate, seed=a.seed), a.port)
