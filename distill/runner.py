"""``sdg distill``: annotated records -> records with the teacher's think, English descriptions and importance.

Flow per record: check the input, look in the cache, else ask the teacher (bounded concurrency, transient retries
with backoff that honours Retry-After, rule checks with feedback retries), then cache the outcome. Outputs are
assembled from the cache in input order at the end, so an interrupted run, rerun, gives the same files as an
uninterrupted one. Every input line ends in ``distilled.jsonl`` or ``rejects.jsonl``; ``summary.json`` reconciles.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from distill import template_teacher
from distill.cache import DiskCache, UsageLedger, cache_key
from distill.checks import check_reply
from distill.config import DistillConfig
from distill.prompting import TeacherTemplate, annotation_hash, facts, image_data_url, teacher_messages
from sdg_data.images import ImageError, check_bytes
from sdg_data.jsonl import InputError, screen_records, write_json, write_jsonl
from sdg_data.records import ImageRecord
from sdg_data.secrets import register


log = logging.getLogger(__name__)


class TransportError(RuntimeError):
    """The teacher could not be reached or kept failing after every retry (not cached: a rerun tries again)."""


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
            return float(ms) / 1000.0
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


class ApiTeacher:
    """A VLM behind an OpenAI-compatible chat-completions endpoint (Gemini, GPT, vLLM, SGLang ...)."""

    def __init__(self, cfg: DistillConfig, stats: Stats):
        from openai import AsyncOpenAI

        register(cfg.api_key_env)
        key = os.environ.get(cfg.api_key_env)
        if not key:
            log.warning("%s is not set; sending requests without a key (fine for a local server)", cfg.api_key_env)
        self.cfg = cfg
        self.stats = stats
        self.ledger: UsageLedger | None = None
        self.client = AsyncOpenAI(base_url=cfg.base_url, api_key=key or "EMPTY", max_retries=0, timeout=cfg.timeout_s)

    def _backoff(self, attempt: int) -> float:
        cap = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * 2**attempt)
        return cap * (0.5 + random.random() / 2)

    async def complete(self, messages: list[dict], image_id: str) -> str:
        """One reply's text; transient failures are retried up to ``max_retries`` times, then TransportError."""
        import openai

        cfg = self.cfg
        last = "no attempt"
        for attempt in range(cfg.max_retries + 1):
            wait: float | None = None
            try:
                self.stats.requests += 1
                if self.ledger is not None:  # counted when sent: a killed run's requests in flight count too
                    self.ledger.add(1, 0, 0)
                resp = await self.client.chat.completions.create(
                    model=cfg.model,
                    messages=messages,
                    temperature=cfg.temperature,
                    max_tokens=cfg.max_tokens,
                    extra_headers={"X-SDG-Image-Id": quote(image_id, safe="")},  # headers are latin-1 only
                )
                usage = resp.usage
                if self.ledger is not None and usage is not None:
                    self.ledger.add(0, usage.prompt_tokens or 0, usage.completion_tokens or 0)
                text = resp.choices[0].message.content if resp.choices else None
                if not isinstance(text, str):
                    raise ValueError("reply has no message content")
                if resp.usage is not None:
                    self.stats.prompt_tokens += resp.usage.prompt_tokens or 0
                    self.stats.completion_tokens += resp.usage.completion_tokens or 0
                return text
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
            except (ValueError, TypeError, KeyError, AttributeError, openai.APIResponseValidationError) as exc:
                kind, last = "malformed", f"malformed reply: {type(exc).__name__}: {str(exc)[:200]}"
            self.stats.fault(kind)
            if attempt == cfg.max_retries:
                break
            self.stats.transient_retries += 1
            await asyncio.sleep(min(wait, 600.0) if wait is not None else self._backoff(attempt))
        raise TransportError(f"gave up after {cfg.max_retries + 1} tries; last: {last}")

    async def close(self) -> None:
        await self.client.close()


@dataclass
class Job:
    line: int
    record: ImageRecord
    image: Path
    key: str
    image_ref: str = ""  # the image path as written to the output: relative to the output folder


def _load_inputs(path: Path, image_roots: list[str] | None = None) -> tuple[list[Job | dict], int]:
    """Input lines in order: a Job, or a reject dict for a line that cannot be distilled (and why)."""
    ok, rejects, n = screen_records(path, ("caption",), "input", image_roots or ())
    items: list[Job | dict] = [Job(line, rec, img, "") for line, rec, img in ok] + rejects
    items.sort(key=lambda x: x.line if isinstance(x, Job) else x["line"])
    return items, n


def _distilled(job: Job, think: str | None, defects: list, cfg: DistillConfig, version: str) -> dict:
    rec = job.record
    prov = dict(rec.provenance)
    prov["distill"] = {
        "teacher": cfg.teacher,
        "model": template_teacher.NAME if cfg.teacher == "template" else cfg.model,
        "prompt_version": version,
    }
    if cfg.teacher == "openai":
        prov["distill"]["temperature"] = cfg.temperature
    out = ImageRecord(
        image_id=rec.image_id,
        defects=defects,
        image_path=job.image_ref,
        width=rec.width,
        height=rec.height,
        caption=rec.caption,
        generator=rec.generator,
        seed=rec.seed,
        split=rec.split,
        provenance=prov,
        think=think,
    )
    out.validate()
    return out.to_json()


def _checked(job: Job, cfg: DistillConfig):
    """The job's image, verified (format, pixel cap, complete decode, the record's size): ImageError otherwise."""
    try:
        data = job.image.read_bytes()
    except OSError as exc:
        raise ImageError(f"{job.image} cannot be read: {exc.strerror or exc}") from None
    return check_bytes(data, (job.record.width, job.record.height), cfg.max_pixels, job.image)


def _data_url(job: Job, cfg: DistillConfig) -> str:
    return image_data_url(_checked(job, cfg).open(), cfg.image_max_side, cfg.image_format)


async def _ask(job: Job, teacher: ApiTeacher, tpl: TeacherTemplate, cfg: DistillConfig, stats: Stats) -> dict:
    url = await asyncio.to_thread(_data_url, job, cfg)
    messages = teacher_messages(tpl, cfg, job.record, url)
    problems: list[str] = []
    for attempt in range(1, cfg.max_attempts + 1):
        text = await teacher.complete(messages, job.record.image_id)
        think, defects, problems = check_reply(text, job.record, cfg)
        if not problems:
            return {"status": "ok", "attempts": attempt, "record": _distilled(job, think, defects, cfg, tpl.version)}
        if attempt < cfg.max_attempts:
            stats.rule_retries += 1
            messages = [
                *messages[:2],
                {"role": "assistant", "content": text},
                {
                    "role": "user",
                    "content": (
                        "Your reply broke these rules: " + "; ".join(problems[:8]) + ". Reply again in full, keeping "
                        "every marked box and label exactly as given."
                    ),
                },
            ]
    return {
        "status": "rejected",
        "attempts": cfg.max_attempts,
        "stage": "teacher",
        "reason": f"reply still broke the rules after {cfg.max_attempts} attempts: " + "; ".join(problems[:8]),
    }


def _template(job: Job, tpl: TeacherTemplate, cfg: DistillConfig) -> dict:
    _checked(job, cfg)  # the template teacher does not look at the image, but the record must point at a real one
    text = template_teacher.respond(
        job.record.caption or "", facts(job.record), cfg.min_words, cfg.max_words, cfg.keep_annotator_importance
    )
    think, defects, problems = check_reply(text, job.record, cfg)
    if problems:
        return {"status": "rejected", "attempts": 1, "stage": "teacher", "reason": "; ".join(problems[:8])}
    return {"status": "ok", "attempts": 1, "record": _distilled(job, think, defects, cfg, tpl.version)}


def distill_file(records: str | Path, out_dir: str | Path, cfg: DistillConfig) -> dict[str, Any]:
    """Run the distill stage; returns the summary also written to ``out_dir/summary.json``."""
    from tqdm.auto import tqdm

    records, out_dir = Path(records), Path(out_dir)
    tpl = TeacherTemplate.load(cfg.template)
    teacher_name = template_teacher.NAME if cfg.teacher == "template" else f"{cfg.base_url}|{cfg.model}"
    cache = DiskCache(cfg.cache_dir or out_dir / "cache")
    items, n_read = _load_inputs(records, cfg.image_roots)
    if n_read == 0:
        raise InputError(f"{records}: no records (an empty file); nothing to distill")
    jobs = [j for j in items if isinstance(j, Job)]
    for j in jobs:
        j.image_ref = os.path.relpath(j.image.resolve(), out_dir.resolve())
        j.key = cache_key(j.record.image_id, annotation_hash(j.record), teacher_name, tpl.version)
    todo = [j for j in jobs if cache.get(j.key) is None]
    stats = Stats()
    ledger = UsageLedger(cache.root / "usage.jsonl")
    failures: dict[str, tuple[str, str]] = {}  # cache key -> (stage, reason) of work that did not finish
    if cfg.teacher == "openai" and todo:
        import openai  # noqa: F401  (a second of imports: not part of the request phase we time)
    t0 = time.perf_counter()
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="distill", unit="img", disable=not cfg.progress)
    try:
        if cfg.teacher == "template":
            for j in todo:
                try:
                    cache.put(j.key, _template(j, tpl, cfg))
                except ImageError as exc:
                    failures[j.key] = ("image", f"record {j.record.image_id!r} field 'image_path': {exc}")
                bar.update()
        elif todo:
            asyncio.run(_run_api(todo, tpl, cfg, cache, stats, failures, bar, ledger))
    finally:
        ledger.close()
        bar.close()
    elapsed = time.perf_counter() - t0

    distilled, rejects, from_cache = [], [], len(jobs) - len(todo)
    attempts_hist: dict[int, int] = {}
    for item in items:
        if isinstance(item, dict):
            rejects.append(item)
            continue
        entry = cache.get(item.key)
        if entry is None:
            stage, reason = failures.get(item.key, ("transport", "not finished"))
            rejects.append(
                {
                    "image_id": item.record.image_id,
                    "line": item.line,
                    "stage": stage,
                    "reason": reason,
                    "record": item.record.to_json(),
                }
            )
            continue
        attempts_hist[entry["attempts"]] = attempts_hist.get(entry["attempts"], 0) + 1
        if entry["status"] == "ok":
            distilled.append(entry["record"])
        else:
            rejects.append(
                {
                    "image_id": item.record.image_id,
                    "line": item.line,
                    "stage": entry["stage"],
                    "reason": entry["reason"],
                    "record": item.record.to_json(),
                }
            )
    write_jsonl(out_dir / "distilled.jsonl", distilled)
    write_jsonl(out_dir / "rejects.jsonl", rejects)
    by_stage: dict[str, int] = {}
    for r in rejects:
        by_stage[r["stage"]] = by_stage.get(r["stage"], 0) + 1

    def cost(prompt_tokens: int, completion_tokens: int) -> float:
        return round((prompt_tokens * cfg.usd_per_mtok_in + completion_tokens * cfg.usd_per_mtok_out) / 1e6, 6)

    runs = ledger.totals()  # this run and every earlier (killed or finished) run into the same cache
    summary = {
        "read": n_read,
        "distilled": len(distilled),
        "rejected": len(rejects),
        "rejected_by_stage": by_stage,
        "from_cache": from_cache,
        "sent": len(todo),
        "teacher": cfg.teacher,
        "model": template_teacher.NAME if cfg.teacher == "template" else cfg.model,
        "prompt_version": tpl.version,
        "requests": runs["requests"],
        "transient_retries": stats.transient_retries,
        "rule_retries": stats.rule_retries,
        "faults": stats.faults,
        "attempts_histogram": {str(k): v for k, v in sorted(attempts_hist.items())},
        "prompt_tokens": runs["prompt_tokens"],
        "completion_tokens": runs["completion_tokens"],
        "cost_usd": cost(runs["prompt_tokens"], runs["completion_tokens"]),
        "this_run": {
            "requests": stats.requests,
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
            "cost_usd": cost(stats.prompt_tokens, stats.completion_tokens),
        },
        "seconds": round(elapsed, 3),
        "requests_per_s": round(stats.requests / elapsed, 2) if elapsed > 0 and stats.requests else None,
    }
    if summary["read"] != summary["distilled"] + summary["rejected"]:  # a bug, never bad input
        raise AssertionError(f"counts do not reconcile: {summary}")
    write_json(out_dir / "summary.json", summary)
    return summary


async def drain(items: list, handle, concurrency: int) -> None:
    """Run ``await handle(item)`` for every item with at most ``concurrency`` in flight (a fixed worker pool
    pulling from one queue, so a slow item never holds a slot idle)."""
    queue: asyncio.Queue = asyncio.Queue()
    for it in items:
        queue.put_nowait(it)

    async def worker() -> None:
        while True:
            try:
                it = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await handle(it)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(items)))))


async def _run_api(todo, tpl, cfg, cache, stats, failures, bar, ledger=None) -> None:
    teacher = ApiTeacher(cfg, stats)
    teacher.ledger = ledger
    refused: list[AuthError] = []

    async def handle(job: Job) -> None:
        if refused:  # the key was refused: send nothing more
            return
        try:
            entry = await _ask(job, teacher, tpl, cfg, stats)
            await asyncio.to_thread(cache.put, job.key, entry)
        except AuthError as exc:
            refused.append(exc)
        except TransportError as exc:
            failures[job.key] = ("transport", str(exc))
        except ImageError as exc:
            failures[job.key] = ("image", f"record {job.record.image_id!r} field 'image_path': {exc}")
        except Exception as exc:  # noqa: BLE001  one bad record never stops the run; it is rejected with the cause
            log.debug("record %s failed", job.record.image_id, exc_info=True)
            failures[job.key] = ("internal", f"{type(exc).__name__}: {exc}")
        bar.update()

    try:
        await drain(todo, handle, cfg.max_in_flight)
    finally:
        await teacher.close()
    if refused:
        raise refused[0]


__all__ = ["distill_file", "drain", "ApiTeacher", "TransportError", "InputError"]
