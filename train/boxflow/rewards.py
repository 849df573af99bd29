"""BoxFlow-GRPO's rewards: a scalar judge and the SDG detector behind OpenAI-compatible servers, or a Python
function; run concurrently on a background event loop so they overlap with the next sampling batch.

- **Judge** (UnifiedReward-2.0 in the paper): three 1-5 scores, alignment, coherence and style, combined as
  ``(0.8 A + 0.1 C + 0.1 S) / 5``. The request's text is a template file (``{prompt}`` placeholder) so a user can
  point it at the authors' exact wording.
- **Detector** (the SDG detector): called as the paper does (image resized to 512 x 512, temperature 0, 4,096
  tokens, 180 s), through the toolkit's chat client and detector conversation, its answer read by the core parser.
  A failed call or an unparseable answer gives no penalty (empty boxes) and is counted; ``strict`` fails instead.
- **Python** (``module:function``): ``f(images, prompts) -> list[float]`` or ``{"scores": [...], "defects":
  [[{box_2d, label, importance}, ...], ...]}``; for tests and scorers that run in-process.

A judge failure leaves the sample without a reward (NaN): it gets no advantage and does not enter the group's
statistics. Keys are read from the environment and never written.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import math
import re
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdg_data.answer import parse_defect_list, parse_response
from sdg_data.io.api_client import Transport
from sdg_data.io.images import data_url
from sdg_data.records import Defect


log = logging.getLogger(__name__)
PROMPTS = Path(__file__).parents[1] / "prompts"
DEFAULT_JUDGE_TEMPLATE = PROMPTS / "judge_v1.txt"
JUDGE_WEIGHTS = (0.8, 0.1, 0.1)  # alignment, coherence, style (paper)
_RANGE = re.compile(r"\(\s*1\s*[-\u2013~to ]+\s*5\s*\)", re.IGNORECASE)
_SCORE = re.compile(r"\b(alignment|coherence|style)\b[^0-9\n]{0,40}?([1-5](?:\.\d+)?)", re.IGNORECASE)


class RewardError(RuntimeError):
    """A reward could not be had and the run is strict about it."""


@dataclass
class RewardBatch:
    """Rewards of a batch of images, in order. ``scores[i]`` is NaN where the judge failed."""

    scores: list[float]
    defects: list[list[Defect]]
    judge_failed: list[str | None]
    detector_failed: list[str | None]
    latency_s: float = 0.0  # wall time from submission to the last reward


@dataclass
class Endpoint:
    """One reward server: how to reach it (the toolkit's one :class:`~sdg_data.io.api_client.Transport`) and what
    each request asks for."""

    transport: Transport
    model: str
    max_tokens: int


def judge_scores(text: str) -> tuple[float, float, float]:
    """(alignment, coherence, style) from the judge's reply; ValueError when one is missing."""
    found: dict[str, float] = {}
    plain = _RANGE.sub("", text or "")  # "Alignment Score (1-5): 4" -> the 4, not the 1
    for name, value in _SCORE.findall(plain):
        found[name.lower()] = float(value)  # the last mention wins: the verdict comes after the reasoning
    missing = [k for k in ("alignment", "coherence", "style") if k not in found]
    if missing:
        raise ValueError(f"judge reply has no {', '.join(missing)} score")
    return found["alignment"], found["coherence"], found["style"]


def combine(scores: tuple[float, float, float], weights: tuple[float, ...] = JUDGE_WEIGHTS) -> float:
    return sum(w * s for w, s in zip(weights, scores)) / 5.0


def _endpoint(cfg: Any, name: str) -> Endpoint | None:
    """The ``judge`` or ``detector`` server of the reward config, or None when it has no URL."""
    url = getattr(cfg, f"{name}_url")
    if not url:
        return None
    get = lambda key: getattr(cfg, f"{name}_{key}")  # noqa: E731
    transport = Transport(base_url=url, api_key_env=get("api_key_env"), timeout_s=get("timeout_s"),
                          max_retries=cfg.reward_retries, backoff_base_s=0.5)  # fmt: skip
    return Endpoint(transport, get("model"), get("max_tokens"))


def load_function(spec: str) -> Any:
    mod, _, fn = spec.partition(":")
    if not mod or not fn:
        raise ValueError(f"python reward must be 'module:function', got {spec!r}")
    return getattr(importlib.import_module(mod), fn)


class RewardService:
    """Scores batches on a background event loop. ``submit`` returns at once with a Future, so the trainer can
    sample the next batch while the servers work."""

    def __init__(self, cfg: Any):
        """``cfg``: a :class:`~train.boxflow.config.BoxFlowRewardConfig` (read for its URLs, models, key variables,
        templates, limits); a Python reward replaces the judge."""
        self.cfg = cfg
        self.judge = None if cfg.python_reward else _endpoint(cfg, "judge")
        self.detector = _endpoint(cfg, "detector")
        if self.judge is None and not cfg.python_reward:
            raise ValueError(
                "no scalar reward: give --judge-url (a UnifiedReward server) or --python_reward module:fn"
            )
        self.fn = load_function(cfg.python_reward) if cfg.python_reward else None
        self.judge_tpl = None
        if self.judge is not None:
            path = Path(cfg.judge_template or DEFAULT_JUDGE_TEMPLATE)
            if not path.is_file():
                raise FileNotFoundError(f"judge template {path}: no such file")
            self.judge_tpl = path.read_text(encoding="utf-8")
            if "{prompt}" not in self.judge_tpl:
                raise ValueError(f"judge template {path}: has no {{prompt}} placeholder")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="boxflow-rewards", daemon=True)
        self.thread.start()
        self.sem: asyncio.Semaphore | None = None
        self.clients: dict[str, Any] = {}
        asyncio.run_coroutine_threadsafe(self._setup(), self.loop).result()

    async def _setup(self) -> None:
        from sdg_data.io.api_client import ChatClient

        self.sem = asyncio.Semaphore(self.cfg.reward_concurrency)
        for name, ep in (("judge", self.judge), ("detector", self.detector)):
            if ep is not None:
                self.clients[name] = ChatClient(ep.transport, ep.model, 0.0, ep.max_tokens)

    def stats(self) -> dict[str, Any]:
        return {k: {"requests": c.stats.requests, "faults": dict(c.stats.faults)} for k, c in self.clients.items()}

    # ------------------------------------------------------------------ public
    def submit(self, images: list[Any], prompts: list[str], ids: list[str]) -> Future:
        return asyncio.run_coroutine_threadsafe(self._batch(images, prompts, ids), self.loop)

    def score(self, images: list[Any], prompts: list[str], ids: list[str]) -> RewardBatch:
        return self.submit(images, prompts, ids).result()

    def close(self) -> None:
        async def shut() -> None:
            for c in self.clients.values():
                await c.close()

        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(shut(), self.loop).result()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)

    # ------------------------------------------------------------------ work
    async def _batch(self, images: list[Any], prompts: list[str], ids: list[str]) -> RewardBatch:
        t0 = self.loop.time()
        n = len(images)
        out = RewardBatch([math.nan] * n, [[] for _ in range(n)], [None] * n, [None] * n)
        if self.fn is not None:
            await self._python(images, prompts, out)
        jobs = []
        for i in range(n):
            if self.judge is not None:
                jobs.append(self._judge(i, images[i], prompts[i], ids[i], out))
            if self.detector is not None:
                jobs.append(self._detect(i, images[i], prompts[i], ids[i], out))
        await asyncio.gather(*jobs)
        out.latency_s = self.loop.time() - t0
        if self.cfg.strict_rewards:
            bad = [f"{ids[i]}: {why}" for i, why in enumerate(out.judge_failed + out.detector_failed) if why]
            if bad:
                raise RewardError(f"{len(bad)} reward failure(s) in strict mode; first: {bad[0]}")
        return out

    async def _python(self, images: list[Any], prompts: list[str], out: RewardBatch) -> None:
        got = await asyncio.to_thread(self.fn, images, prompts)
        scores = got.get("scores") if isinstance(got, dict) else got
        if not isinstance(scores, (list, tuple)) or len(scores) != len(images):
            raise RewardError(
                f"python reward {self.cfg.python_reward} returned {type(scores).__name__}, not a score per image"
            )
        out.scores = [float(x) for x in scores]
        if isinstance(got, dict) and got.get("defects") is not None and self.detector is None:
            for i, items in enumerate(got["defects"]):
                res = parse_defect_list(items)
                out.defects[i] = res.defects

    async def _ask(self, name: str, messages: list[dict], image_id: str) -> str:
        assert self.sem is not None
        async with self.sem:
            return await self.clients[name].complete(messages, image_id)

    async def _judge(self, i: int, image: Any, prompt: str, image_id: str, out: RewardBatch) -> None:
        from sdg_data.io.api_client import AuthError

        url = await asyncio.to_thread(data_url, image, None, None, "png")
        text = self.judge_tpl.format(prompt=prompt)  # type: ignore[union-attr]
        messages = [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}],
            }
        ]
        try:
            reply = await self._ask("judge", messages, image_id)
            out.scores[i] = combine(judge_scores(reply), tuple(self.cfg.judge_weights))
        except AuthError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed reward is counted, never fatal unless strict
            out.judge_failed[i] = f"{type(exc).__name__}: {str(exc)[:200]}"

    async def _detect(self, i: int, image: Any, prompt: str, image_id: str, out: RewardBatch) -> None:
        from sdg_data.detector_prompt import conversation
        from sdg_data.io.api_client import AuthError

        url = await asyncio.to_thread(data_url, image, None, self.cfg.detector_image_side, "png")
        messages = conversation(prompt, self.cfg.detector_template, image=url, flat_system=True)
        try:
            reply = await self._ask("detector", messages, image_id)
        except AuthError:
            raise
        except Exception as exc:  # noqa: BLE001 - the paper: a failed call gives no penalty
            out.detector_failed[i] = f"{type(exc).__name__}: {str(exc)[:200]}"
            return
        res = parse_response(reply, order=self.cfg.detector_box_order)
        if not res.format_ok:  # the paper: an unparseable answer gives empty boxes
            out.detector_failed[i] = f"unparseable answer: {res.reason}"
            return
        out.defects[i] = res.defects
