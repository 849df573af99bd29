"""A loopback OpenAI-compatible image-edit server (``POST /v1/images/edits``, multipart) for tests and benchmarks.

It "edits" by tinting the first uploaded image a little toward green (so an edit is visibly an edit), after a set
latency, and injects faults at a set rate: HTTP 500, 429 with Retry-After, a hang past the client's timeout and a
body that is not JSON. Every request is logged with its image id header, the number of images and the prompt, so
tests can check what was sent and that nothing is asked twice. Usage tokens are reported like GPT-Image's.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import io
import json
import random
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import unquote

from sdg_data.testkit.chat_server import JSONHandler, LoopbackServer


FAULTS = ("500", "429", "timeout", "malformed")


class LoopbackEditor:
    def __init__(self, latency: float = 0.0, fault_rate: float = 0.0, faults: tuple[str, ...] = FAULTS, seed: int = 0,
                 hang_s: float = 2.0):  # fmt: skip
        self.latency, self.fault_rate, self.faults, self.hang_s = latency, fault_rate, faults, hang_s
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.log: list[dict[str, Any]] = []

    def pick_fault(self, image_id: str) -> str | None:
        with self.lock:
            self.requests[image_id] += 1
            fault = self.rng.choice(self.faults) if self.faults and self.rng.random() < self.fault_rate else None
            if fault:
                self.injected[fault] += 1
            return fault


def _parts(content_type: str, body: bytes) -> tuple[dict[str, str], list[bytes]]:
    """Form fields and uploaded files of a multipart body."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields, files = {}, []
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if part.get_filename():
            files.append(payload)
        elif name:
            fields[name] = payload.decode("utf-8", errors="replace")
    return fields, files


def tint(png: bytes) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        rgb = im.convert("RGB")
    green = Image.new("RGB", rgb.size, (40, 200, 60))
    out = io.BytesIO()
    Image.blend(rgb, green, 0.25).save(out, format="PNG")
    return out.getvalue()


class _Handler(JSONHandler):
    def _send(self, code: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            super()._send(code, payload, headers)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout fault)
            pass

    def do_POST(self) -> None:  # noqa: N802
        editor: LoopbackEditor = self.server.editor  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not self.path.rstrip("/").endswith("/images/edits"):
            return self._send(404, b'{"error": {"message": "not found"}}')
        image_id = unquote(self.headers.get("X-SDG-Image-Id", "?"))
        fault = editor.pick_fault(image_id)
        time.sleep(editor.latency)
        if fault == "500":
            return self._send(500, b'{"error": {"message": "injected server error"}}')
        if fault == "429":
            return self._send(429, b'{"error": {"message": "injected rate limit"}}', {"retry-after-ms": "50"})
        if fault == "timeout":
            time.sleep(editor.hang_s)
        if fault == "malformed":
            return self._send(200, b'{"created": 1, "data": [{"b64_json": "trunc')
        if fault == "deep":  # valid JSON nested 100,000 deep: past any parser's recursion limit
            return self._send(200, b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
        fields, files = _parts(self.headers.get("Content-Type", ""), raw)
        with editor.lock:
            editor.log.append({"image_id": image_id, "images": len(files), "prompt": fields.get("prompt", ""),
                               "model": fields.get("model"), "fault": fault})  # fmt: skip
        if not files:
            return self._send(400, b'{"error": {"message": "no image"}}')
        body = {
            "created": int(time.time()),
            "data": [{"b64_json": base64.b64encode(tint(files[0])).decode()}],
            "usage": {"input_tokens": 100 * len(files) + len(fields.get("prompt", "")) // 4, "output_tokens": 1056,
                      "total_tokens": 0},
        }  # fmt: skip
        self._send(200, json.dumps(body).encode())


class LoopbackEditServer(LoopbackServer):
    """``with LoopbackEditServer(LoopbackEditor(...)) as srv: srv.base_url``."""

    handler, state_name = _Handler, "editor"

    def __init__(self, editor: LoopbackEditor | None = None, port: int = 0):
        self.editor = editor or LoopbackEditor()
        super().__init__(self.editor, port)
