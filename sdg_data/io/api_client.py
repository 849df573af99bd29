"""One client for every OpenAI-compatible endpoint the toolkit calls: distill's teacher, detect's served detector
and next BoxFlow's reward servers. Bounded concurrency (:func:`drain`), timeouts, one retry policy, key handling.

The ``openai`` package is imported when a client is made, so the core stays light without the distill extra.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import email.utils
import logging
import os
import random
import time
import typing
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from sdg_data.config import Count, NonNegative, Positive, Seconds
from sdg_data.io.secrets import register


log = logging.getLogger(__name__)
_DONE = object()


@dataclass
class Transport:
    """How a stage talks to an OpenAI-compatible server, declared once: every stage config that calls one
    (distill's teacher, detect's served detector, refine's image editor) includes these settings, each with its
    own defaults (:func:`transport_defaults`), and :class:`ChatClient` reads them from here."""

    base_url: str = field(
        default="http://127.0.0.1:8000/v1",
        metadata={"help": "the server's OpenAI-compatible base URL (backend openai)"},
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={"help": "the variable holding the key (the key is never logged or written)"},
    )
    max_in_flight: Positive = field(default=16, metadata={"help": "requests in flight at once"})
    timeout_s: Seconds = field(default=120.0, metadata={"help": "per request"})
    max_retries: Count = field(
        default=4, metadata={"help": "transient failures (429, 5xx, timeouts, broken replies) retried per request"}
    )
    backoff_base_s: NonNegative = field(default=1.0, metadata={"help": "first retry wait (doubles, with jitter)"})
    backoff_max_s: NonNegative = field(
        default=30.0, metadata={"help": "longest retry wait; a server's Retry-After is capped by it too"}
    )


def transport_defaults(**defaults: Any) -> Callable[[type], type]:
    """A stage's own defaults for :class:`Transport`'s settings: a class decorator placed under ``@dataclass``
    on a subclass of Transport. The declarations (type, bounds, help) stay in Transport; only the values change."""
    hints = typing.get_type_hints(Transport, include_extras=True)
    unknown = sorted(set(defaults) - set(hints))
    if unknown:
        raise TypeError(f"transport_defaults: {unknown} are not Transport settings ({sorted(hints)})")

    def apply(cls: type) -> type:
        if not issubclass(cls, Transport):
            raise TypeError(f"transport_defaults: {cls.__name__} does not include Transport")
        own = dict(cls.__dict__.get("__annotations__", {}))
        cls.__annotations__ = {**{k: hints[k] for k in defaults}, **own}  # redeclared: same place, new default
        declared = {f.name: f for f in dataclasses.fields(Transport)}
        for name, value in defaults.items():
            setattr(cls, name, field(default=value, metadata=declared[name].metadata))
        return cls

    return apply


class TransportError(RuntimeError):
    """The server could not be reached or kept failing after every retry (not a verdict: a rerun tries again)."""


def local_server(url: str) -> bool:
    """Whether ``url`` is on this machine (loopback): the only servers a request goes to without a key."""
    from urllib.parse import urlsplit

    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


class AuthError(TransportError):
    """The server refused the key (401/403): every request would fail the same way, so the run stops at once."""


@dataclass
class Stats:
    requests: int = 0
    transient_retries: int = 0
    rule_retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    faults: dict[str, int] = field(default_factory=dict)

    def fault(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1


def _retry_after(headers: Any) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, or ``retry-after`` as seconds or an HTTP date."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            wait = float(ms) / 1000.0
            if wait == wait and wait >= 0:  # NaN or negative: fall back to the next form, then to backoff
                return wait
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        secs = float(ra)
        return secs if secs == secs and secs >= 0 else None  # NaN or negative: fall back to backoff
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError, IndexError, OverflowError):  # neither seconds nor an HTTP date
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - time.time())


class ChatClient:
    """A model behind an OpenAI-compatible chat-completions endpoint (Gemini, GPT, vLLM, SGLang ...).

    ``transport`` is the stage's config (its :class:`Transport` settings: URL, key variable, timeout, retries,
    backoff); ``model``, ``temperature`` and ``max_tokens`` are what each request asks for.

    The one retry layer: the SDK's own retries are off (``max_retries=0``); here 429, 5xx, timeouts, broken
    connections and malformed replies are retried with exponential backoff that honours ``Retry-After``; 401/403
    raise :class:`AuthError` at once; other 4xx raise :class:`TransportError`. The key comes from the variable
    ``api_key_env`` names and is masked in everything written (:mod:`sdg_data.io.secrets`)."""

    def __init__(
        self,
        transport: Transport,
        model: str,
        temperature: float = 0.0,
        max_tokens: int = 4096,
        stats: Stats | None = None,
        ledger: Any = None,
    ):
        cfg = transport
        self.model, self.temperature, self.max_tokens = model, temperature, max_tokens
        from openai import AsyncOpenAI
        from openai.types.chat import ChatCompletion

        self._reply_type = ChatCompletion
        register(cfg.api_key_env)
        key = os.environ.get(cfg.api_key_env)
        if not key and not local_server(cfg.base_url):
            raise AuthError(f"set {cfg.api_key_env}: the server at {cfg.base_url} needs a key (none is sent to a "
                            "local server; give --base-url for one)")  # fmt: skip
        if not key:
            log.warning("%s is not set; sending requests without a key (fine for a local server)", cfg.api_key_env)
        self.cfg = cfg
        self.stats = stats or Stats()
        self.ledger = ledger  # anything with add(requests, prompt_tokens, completion_tokens): a usage ledger
        self.client = AsyncOpenAI(base_url=cfg.base_url, api_key=key or "EMPTY", max_retries=0, timeout=cfg.timeout_s)

    def _backoff(self, attempt: int) -> float:
        cap = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * 2**attempt)
        return cap * (0.5 + random.random() / 2)

    async def complete(self, messages: list[dict], image_id: str) -> str:
        """One reply's text; transient failures are retried up to ``max_retries`` times, then TransportError.
        ``image_id`` travels in the ``X-SDG-Image-Id`` header (percent-encoded: headers are latin-1 only)."""
        ChatCompletion = self._reply_type

        async def attempt() -> str:
            # the SDK's resource method walks every message through its TypedDict transform (2-3 ms of the event
            # loop a request with an image); our messages are plain JSON already, so they are posted as is
            resp = await self.client.post(
                "/chat/completions",
                cast_to=ChatCompletion,
                body={"model": self.model, "messages": messages, "temperature": self.temperature,
                      "max_tokens": self.max_tokens},
                options={"headers": {"X-SDG-Image-Id": quote(image_id, safe="")}},  # headers are latin-1 only
            )  # fmt: skip
            usage = resp.usage
            if self.ledger is not None and usage is not None:
                self.ledger.add(0, usage.prompt_tokens or 0, usage.completion_tokens or 0)
            text = resp.choices[0].message.content if resp.choices else None
            if not isinstance(text, str):
                raise ValueError("reply has no message content")
            if usage is not None:
                self.stats.prompt_tokens += usage.prompt_tokens or 0
                self.stats.completion_tokens += usage.completion_tokens or 0
            return text

        return await self.retrying(attempt)

    async def edit_image(self, images: list[tuple[str, bytes]], prompt: str, image_id: str, **params: Any) -> bytes:
        """One image edit (``/images/edits``: GPT-Image and compatible servers): the edited image's bytes, with the
        same retries and errors as :meth:`complete`. ``images``: (file name, PNG bytes), the first is edited."""
        import base64

        async def attempt() -> bytes:
            resp = await self.client.images.edit(
                model=self.model,
                image=[(name, data, "image/png") for name, data in images],
                prompt=prompt,
                extra_headers={"X-SDG-Image-Id": quote(image_id, safe="")},
                **params,
            )
            usage = getattr(resp, "usage", None)
            if usage is not None:
                self.stats.prompt_tokens += getattr(usage, "input_tokens", 0) or 0
                self.stats.completion_tokens += getattr(usage, "output_tokens", 0) or 0
            data = resp.data[0].b64_json if resp.data else None
            if not data:
                raise ValueError("reply has no image")
            return base64.b64decode(data)

        return await self.retrying(attempt)

    async def retrying(self, attempt) -> Any:
        """``await attempt()`` with the one retry policy: 429, 5xx, timeouts, broken connections and malformed
        replies are retried with backoff (honouring ``Retry-After``) up to ``max_retries`` times, 401/403 raise
        :class:`AuthError` at once, other 4xx :class:`TransportError`."""
        import openai

        cfg = self.cfg
        last = "no attempt"
        for n in range(cfg.max_retries + 1):
            wait: float | None = None
            try:
                self.stats.requests += 1
                if self.ledger is not None:  # counted when sent: a killed run's requests in flight count too
                    self.ledger.add(1, 0, 0)
                return await attempt()
            except openai.RateLimitError as exc:
                kind, last = "429", f"rate limited (429): {exc.message[:200]}"
                wait = _retry_after(exc.response.headers)
            except openai.APITimeoutError:
                kind, last = "timeout", f"no reply within {cfg.timeout_s} s"
            except openai.APIConnectionError as exc:
                kind, last = "connection", f"connection failed: {exc}"
            except openai.APIStatusError as exc:
                if exc.status_code in (401, 403):
                    raise AuthError(
                        f"the server at {cfg.base_url} refused the key (HTTP {exc.status_code}); check "
                        f"${cfg.api_key_env}"
                    ) from None
                if exc.status_code < 500 and exc.status_code not in (408, 409):
                    raise TransportError(f"HTTP {exc.status_code}: {exc.message[:300]}") from None
                kind, last = str(exc.status_code), f"HTTP {exc.status_code}: {exc.message[:200]}"
                wait = _retry_after(exc.response.headers)
            except (
                ValueError,
                TypeError,
                KeyError,
                AttributeError,
                RecursionError,
                openai.APIResponseValidationError,
            ) as exc:
                kind, last = "malformed", f"malformed reply: {type(exc).__name__}: {str(exc)[:200]}"
            self.stats.fault(kind)
            if n == cfg.max_retries:
                break
            self.stats.transient_retries += 1
            # a server's Retry-After is honoured up to the user's own bound on a wait (--backoff-max-s)
            await asyncio.sleep(min(wait, self.cfg.backoff_max_s) if wait is not None else self._backoff(n))
        raise TransportError(f"gave up after {cfg.max_retries + 1} tries; last: {last}")

    async def close(self) -> None:
        await self.client.close()


async def drain(items: Iterable[Any] | AsyncIterator[Any], handle, concurrency: int) -> None:
    """Run ``await handle(item)`` for every item with at most ``concurrency`` in flight: a fixed worker pool pulling
    from one source (a list, or an async iterator that prepares items ahead), so a slow item never holds a slot
    idle."""
    if isinstance(items, AsyncIterator):
        source, lock = items, asyncio.Lock()

        async def pull() -> Any:
            async with lock:  # an async generator takes one __anext__ at a time
                return await anext(source, _DONE)
    else:
        queue = list(items)[::-1]
        concurrency = min(concurrency, len(queue))

        async def pull() -> Any:
            return queue.pop() if queue else _DONE

    async def worker() -> None:
        while (item := await pull()) is not _DONE:
            await handle(item)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
