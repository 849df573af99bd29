"""``sdg distill``: annotated records -> records with the teacher's think, English descriptions and importance.

Flow per record: check the input, look in the cache, else ask the teacher (bounded concurrency, transient retries
with backoff that honours Retry-After, rule checks with feedback retries), then cache the outcome. Outputs are
assembled from the cache in input order at the end, so an interrupted run, rerun, gives the same files as an
uninterrupted one. Every input line ends in ``distilled.jsonl`` or ``distill.rejects.jsonl``; the summary
(``distill.summary.json``) reconciles.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill import template_teacher
from distill.cache import DiskCache, UsageLedger, cache_key
from distill.checks import check_reply
from distill.config import DistillConfig
from distill.prompting import TeacherTemplate, annotation_hash, facts, teacher_messages
from sdg_data.io.api_client import AuthError, ChatClient, Stats, TransportError, drain
from sdg_data.io.files import write_jsonl
from sdg_data.io.images import ImageError, read_verified
from sdg_data.io.jsonl import InputError, screen_records
from sdg_data.io.paths import Resolver, vouch
from sdg_data.io.progress import progress_bar
from sdg_data.io.report import StageReport
from sdg_data.records import ImageRecord, Reject


log = logging.getLogger(__name__)


@dataclass
class Job:
    line: int
    record: ImageRecord
    image: Path
    key: str
    image_ref: str = ""  # the image path as written to the output: relative to the output folder


def _load_inputs(
    path: Path, image_roots: list[str] | None = None, max_chars: int = 20_000
) -> tuple[list[Job | Reject], int]:
    """Input lines in order: a Job, or the Reject of a line that cannot be distilled (and why): a record whose text
    for the teacher (caption and box descriptions) is longer than ``max_chars`` is refused before any request."""
    ok, rejects, n = screen_records(path, ("caption",), "input", image_roots or (), annotated=True)
    items: list[Job | Reject] = list(rejects)
    for line, rec, img in ok:
        size = len(rec.caption or "") + sum(len(d.description) for d in rec.defects)
        if size > max_chars:
            why = (f"record {rec.image_id!r} field 'caption': {size} characters of caption and descriptions, more "
                   f"than max_input_chars {max_chars}: not sent to the teacher")  # fmt: skip
            items.append(Reject(why, "input", rec.image_id, f"{path}:{line}", line, None))
        else:
            items.append(Job(line, rec, img, ""))
    items.sort(key=lambda x: x.line or 0)
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


def _checked(job: Job, cfg: DistillConfig, pixels: bool = False):
    """The job's image, verified (format, pixel cap, complete decode, the record's size): ImageError otherwise.
    ``pixels``: decoded in full at once, for a caller that sends them. Read as a file, so the build after it knows
    the file unchanged by its stat and neither decodes nor hashes it again."""
    return read_verified(job.image, (job.record.width, job.record.height), cfg.max_pixels, pixels)


def _data_url(job: Job, cfg: DistillConfig) -> str:
    from sdg_data.io.images import data_url

    return data_url(_checked(job, cfg, pixels=True).open(), cfg.image_max_side, fmt=cfg.image_format)


async def _ask(job: Job, url: str, teacher: ChatClient, tpl: TeacherTemplate, cfg: DistillConfig) -> dict:
    # CPU work (reply checks, the record) runs in threads, off the event loop that keeps max_in_flight requests
    # moving; the image was encoded ahead (see _prepared)
    messages = teacher_messages(tpl, cfg, job.record, url)
    problems: list[str] = []
    for attempt in range(1, cfg.max_attempts + 1):
        text = await teacher.complete(messages, job.record.image_id)
        entry, problems = await asyncio.to_thread(_verdict, job, text, cfg, tpl.version, attempt)
        if entry is not None:
            return entry
        if attempt < cfg.max_attempts:
            teacher.stats.rule_retries += 1
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


def _verdict(job: Job, text: str, cfg: DistillConfig, version: str, attempt: int) -> tuple[dict | None, list[str]]:
    """The cache entry of a reply that passes the rules, or None and the broken rules (the caller re-asks)."""
    think, defects, problems = check_reply(text, job.record, cfg)
    if problems:
        return None, problems
    return {"status": "ok", "attempts": attempt, "record": _distilled(job, think, defects, cfg, version)}, []


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
    """Run the distill stage; returns the summary also written to ``out_dir/distill.summary.json``."""

    from sdg_data.io.files import output_root

    records, out_dir = Path(records), output_root(out_dir)
    tpl = TeacherTemplate.load(cfg.template)
    teacher_name = template_teacher.NAME if cfg.teacher == "template" else f"{cfg.base_url}|{cfg.model}"
    cache = DiskCache(cfg.cache_dir or out_dir / "cache")
    items, n_read = _load_inputs(records, cfg.image_roots, cfg.max_input_chars)
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
    teacher = None
    if cfg.teacher == "openai" and todo:  # the client and its imports (a second) are not part of the request phase
        teacher = ChatClient(cfg, cfg.model, cfg.temperature, cfg.max_tokens, stats, ledger)
    t0 = time.perf_counter()
    bar = progress_bar(total=len(jobs), initial=len(jobs) - len(todo), desc="distill", unit="img",
                       enabled=cfg.progress)  # fmt: skip
    try:
        if cfg.teacher == "template":
            for j in todo:
                try:
                    cache.put(j.key, _template(j, tpl, cfg))
                except ImageError as exc:
                    failures[j.key] = ("image", f"record {j.record.image_id!r} field 'image_path': {exc}")
                bar.update()
        elif todo:
            asyncio.run(_run_api(todo, tpl, cfg, cache, failures, bar, teacher))
    finally:
        ledger.close()
        bar.close()
    elapsed = time.perf_counter() - t0

    report, distilled, attempts = _assemble(items, records, cache, failures, n_read)
    if not report.failed:  # a run that kept nothing leaves an earlier distilled.jsonl as it was
        write_jsonl(out_dir / "distilled.jsonl", distilled)
    from_cache = len(jobs) - len(todo)
    report.extras = _figures(report, distilled, attempts, from_cache, len(todo), cfg, tpl, stats, ledger, elapsed)
    # the roots this run checked the images in travel with distilled.jsonl, so build needs no --image-root
    roots = Resolver.for_records(records, cfg.image_roots or ()).roots
    if not report.failed:
        report.extras.update(vouch(out_dir / "distilled.jsonl", roots))
    summary = report.write(out_dir)
    return summary


def _current(cached: dict, job: Job) -> dict:
    """A cached reply's record with this run's input around it: the teacher's think, descriptions and importances
    are reused (the cache key covers what they depend on: caption, image, boxes), while the record's own fields
    (generator, seed, split, size, image path, provenance) come from the input as it is now, never a stale copy."""
    rec = job.record
    prov = {**rec.provenance, "distill": (cached.get("provenance") or {}).get("distill")}
    return {**cached, "image_path": job.image_ref, "width": rec.width, "height": rec.height, "caption": rec.caption,
            "generator": rec.generator, "seed": rec.seed, "split": rec.split, "provenance": prov}  # fmt: skip


def _assemble(items: list, records: Path, cache: DiskCache, failures: dict, n_read: int) -> tuple[Any, ...]:
    """The outputs in input order, from the cache: each line is distilled or rejected with its reason."""
    report = StageReport("distill", read=n_read)
    distilled: list[dict] = []
    attempts_hist: dict[int, int] = {}
    for item in items:
        if isinstance(item, Reject):  # a line screen_records already rejected
            report.add([item])
            continue
        entry = cache.get(item.key)
        where = f"{records}:{item.line}"
        rec = item.record
        if entry is None:
            stage, reason = failures.get(item.key, ("transport", "not finished"))
            report.reject(reason, rec.image_id, where, rec.to_json(), stage=stage, line=item.line)
            continue
        attempts_hist[entry["attempts"]] = attempts_hist.get(entry["attempts"], 0) + 1
        if entry["status"] == "ok":
            distilled.append(_current(entry["record"], item))
        else:
            report.reject(entry["reason"], rec.image_id, where, rec.to_json(), stage=entry["stage"], line=item.line)
    report.kept = len(distilled)
    return report, distilled, attempts_hist


def _figures(report, distilled, attempts, from_cache, sent, cfg, tpl, stats, ledger, elapsed) -> dict[str, Any]:
    """The summary's own figures: teacher, requests, tokens and cost of this run and of every run."""

    def cost(prompt_tokens: int, completion_tokens: int) -> float:
        return round((prompt_tokens * cfg.usd_per_mtok_in + completion_tokens * cfg.usd_per_mtok_out) / 1e6, 6)

    runs = ledger.totals()  # this run and every earlier (killed or finished) run into the same cache
    return {
        "distilled": len(distilled),
        "rejected_by_stage": report.by_stage(),
        "from_cache": from_cache,
        "sent": sent,
        "teacher": cfg.teacher,
        "model": template_teacher.NAME if cfg.teacher == "template" else cfg.model,
        "prompt_version": tpl.version,
        "requests": runs["requests"],
        "transient_retries": stats.transient_retries,
        "rule_retries": stats.rule_retries,
        "faults": stats.faults,
        "attempts_histogram": {str(k): v for k, v in sorted(attempts.items())},
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


async def _prepared(todo: list[Job], cfg: DistillConfig, refused: list) -> AsyncIterator[tuple[Job, Any]]:
    """Each job with its image encoded as a data URL (or the ImageError), encoded in a thread ahead of need:
    up to ``max_in_flight`` wait ready, so a request slot that frees never waits for an image."""
    ready: asyncio.Queue = asyncio.Queue(maxsize=cfg.max_in_flight)

    async def encode() -> None:
        for job in todo:
            if refused:
                break
            try:
                url: Any = await asyncio.to_thread(_data_url, job, cfg)
            except ImageError as exc:
                url = exc
            await ready.put((job, url))
        await ready.put(None)

    producer = asyncio.create_task(encode())
    try:
        while (item := await ready.get()) is not None:
            yield item
    finally:
        producer.cancel()


async def _run_api(todo, tpl, cfg, cache, failures, bar, teacher: ChatClient) -> None:
    refused: list[AuthError] = []

    async def handle(item: tuple[Job, Any]) -> None:
        job, url = item
        if refused:  # the key was refused: send nothing more
            return
        try:
            if isinstance(url, ImageError):
                raise url
            entry = await _ask(job, url, teacher, tpl, cfg)
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
        await drain(_prepared(todo, cfg, refused), handle, cfg.max_in_flight)
    finally:
        await teacher.close()
    if refused:
        raise refused[0]


__all__ = ["distill_file", "InputError"]
