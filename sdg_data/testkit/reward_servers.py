"""Stand-ins for BoxFlow-GRPO's two reward models, for tests, the smoke loop and benchmarks (never for training).

Both read the image the request carries, so their answers depend on what was generated:

- the **judge** answers ``Alignment / Coherence / Style`` marks from the image's brightness and contrast (finely
  binned, so near-identical images still differ);
- the **detector** answers an SDG ``<think>/<answer>`` with one artifact box on the image's darkest quadrant
  (importance from how dark it is) and, for dim images, a misalignment box over the whole top half.

``brightness_reward`` is the same judge and detector as an in-process Python reward (``module:function``).

    python -m sdg_data.testkit.reward_servers --latency 0.2          # prints the judge's and detector's URLs
"""

from __future__ import annotations

import base64
import io
import json
import threading
from typing import Any

from sdg_data.testkit.chat_server import LoopbackChat, LoopbackChatServer, cli_args


def _request_image(body: dict[str, Any]) -> Any:
    from PIL import Image

    for msg in body.get("messages", []):
        content = msg.get("content")
        if isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "image_url":
                    url = block["image_url"]["url"]
                    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("L")
    raise ValueError("request has no image")


def _quadrants(gray: Any) -> list[tuple[float, list[int]]]:
    import numpy as np

    a = np.asarray(gray, dtype=np.float32) / 255.0
    h, w = a.shape
    out = []
    for qy in (0, 1):
        for qx in (0, 1):
            part = a[qy * h // 2 : (qy + 1) * h // 2, qx * w // 2 : (qx + 1) * w // 2]
            out.append((float(part.mean()), [qx * 500, qy * 500, qx * 500 + 500, qy * 500 + 500]))
    return out


def judge_marks(gray: Any) -> tuple[int, int, int]:
    import numpy as np

    a = np.asarray(gray, dtype=np.float32) / 255.0
    # sensitive to small changes, so a group of near-identical tiny-model images still gets a spread of marks
    level = 1 + int(float(a.mean()) * 400) % 5
    detail = 1 + int(float(a.std()) * 400) % 5
    return level, detail, min(5, (level + detail + 1) // 2)


def detector_defects(gray: Any) -> list[dict[str, Any]]:
    quads = _quadrants(gray)
    dark, box = min(quads)
    items = [
        {
            "box_2d": box,
            "label": "artifact",
            "description": "a smeared, muddy patch",
            "importance": max(1, min(100, int(round((1 - dark) * 100)))),
        }
    ]
    if sum(q for q, _ in quads) / 4 < 0.45:
        items.append(
            {"box_2d": [0, 0, 1000, 500], "label": "misalignment", "description": "too dim", "importance": 20}
        )
    return items


def judge_reply(body: dict[str, Any], image_id: str, fault: str | None = None) -> str:
    if fault in ("moved", "dropped"):
        return "I cannot rate this."  # garbage: no marks
    a, c, s = judge_marks(_request_image(body))
    return f"Looked at it.\nAlignment: {a}\nCoherence: {c}\nStyle: {s}"


def detector_reply(body: dict[str, Any], image_id: str, fault: str | None = None) -> str:
    if fault in ("moved", "dropped"):
        return "<think>hmm</think><answer>[{not json"  # an unparseable answer
    items = detector_defects(_request_image(body))
    return "<think>### Step 1: looked</think><answer>" + json.dumps(items) + "</answer>"


def brightness_reward(images: list[Any], prompts: list[str]) -> dict[str, Any]:
    """The judge and detector above as one in-process reward (marks combined as the paper's judge reward is)."""
    scores, defects = [], []
    for im in images:
        gray = im.convert("L")
        a, c, s = judge_marks(gray)
        scores.append((0.8 * a + 0.1 * c + 0.1 * s) / 5)
        defects.append(detector_defects(gray))
    return {"scores": scores, "defects": defects}


def brightness_score(images: list[Any], prompts: list[str]) -> list[float]:
    """A scorer hook for ``sdg eval-lora --scorer``: the judge's combined mark alone."""
    return brightness_reward(images, prompts)["scores"]


class RewardServers:
    """``with RewardServers(latency=0.2) as s: s.judge_url, s.detector_url`` (two loopback servers)."""

    def __init__(self, latency: float = 0.0, fault_rate: float = 0.0, faults: tuple[str, ...] = (), seed: int = 0,
                 hang_s: float = 2.0):  # fmt: skip
        kw = {"latency": latency, "fault_rate": fault_rate, "faults": faults, "seed": seed, "hang_s": hang_s}
        self.judge = LoopbackChat(**kw)
        self.judge.default_reply = judge_reply
        self.detector = LoopbackChat(**{**kw, "seed": seed + 1})
        self.detector.default_reply = detector_reply
        self._servers = [LoopbackChatServer(self.judge), LoopbackChatServer(self.detector)]

    @property
    def judge_url(self) -> str:
        return self._servers[0].base_url

    @property
    def detector_url(self) -> str:
        return self._servers[1].base_url

    def __enter__(self) -> RewardServers:
        for s in self._servers:
            s.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        for s in self._servers:
            s.__exit__(*exc)


def main() -> None:
    a = cli_args(__doc__)
    servers = RewardServers(a.latency, a.fault_rate, ("500", "timeout", "malformed", "moved"), a.seed)
    servers.__enter__()
    print(json.dumps({"judge_url": servers.judge_url, "detector_url": servers.detector_url}), flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
