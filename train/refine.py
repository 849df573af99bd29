"""``sdg refine``: edit images from their defects (the paper's section 5.2.2), or write the request bundles for any
other editor.

For each image the editor gets the original, an instruction (the caption plus the defects; a template file, our
words by default) and, in ``boxes+text`` mode, a second image with the boxes drawn as ``sdg viz`` draws them. The
modes the paper's comparison needs: ``boxes+text`` (SDG), ``text-only``, ``caption-only`` (its "Fixed" baseline)
and ``heatmap+text`` (the ImageDoctor-style baseline, for records carrying heatmaps, e.g. from ``sdg import
richhf``). Backends: ``openai`` (an OpenAI-compatible ``/images/edits`` endpoint, GPT-Image by default, with the
toolkit's concurrency, timeouts, retries and token accounting), ``diffusers`` (a local editing pipeline such as
FLUX.1 Kontext, which takes one image: the boxes travel in the text) and ``dry-run`` (the bundles only).

Inputs: records with defects and image paths, or ``sdg detect`` predictions plus ``--images`` (what detect read).
Clean images are skipped by default and counted. Every input ends as an edit (``refined.jsonl``: a record per
edit, linked to its source) or a reject with its reason; finished edits are kept across a crash and a rerun does
only the rest.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sdg_data.answer import render_answer, render_response
from sdg_data.config import Count, NonNegative, Positive
from sdg_data.io.api_client import Transport, transport_defaults
from sdg_data.io.arrow import SplitName
from sdg_data.records import Defect, Reject


PROMPTS = Path(__file__).parent / "prompts"
TEMPLATES = {"caption-only": PROMPTS / "refine_caption_v1.txt", "default": PROMPTS / "refine_v1.txt"}
DEFAULT_MODELS = {"openai": "gpt-image-1.5", "diffusers": "black-forest-labs/FLUX.1-Kontext-dev", "dry-run": "-"}
Mode = Literal["boxes+text", "text-only", "caption-only", "heatmap+text"]


@dataclass
@transport_defaults(base_url="https://api.openai.com/v1", max_in_flight=8, timeout_s=300.0)
class RefineConfig(Transport):
    RECIPE_KIND = "refine"  # bundled recipes of this kind are found by name (sdg recipes)

    mode: Mode = field(
        default="boxes+text",
        metadata={"help": 'boxes+text (SDG), text-only, caption-only (the "Fixed" baseline), heatmap+text'},
    )
    backend: Literal["openai", "diffusers", "dry-run"] = field(
        default="openai", metadata={"help": "the image-edit API, a local pipeline, bundles"}
    )
    model: str | None = field(
        default=None,
        metadata={"help": "default: gpt-image-1.5 (openai), black-forest-labs/FLUX.1-Kontext-dev (diffusers)"},
    )
    images: str | None = field(
        default=None,
        metadata={"help": "for predictions: what sdg detect read (records JSONL, image folder or dataset)"},
    )
    image_roots: list[str] | None = field(
        default=None,
        metadata={
            "flag": "--image-root",
            "help": "Folder that record image paths may point into (repeatable). Default: the records file's folder.",
        },
    )
    template: str | None = field(
        default=None, metadata={"help": "instruction file ({caption}, {defects}); default train/prompts/refine_v1.txt"}
    )
    include_clean: bool = field(
        default=False,
        metadata={"help": "also edit images with no defect (skipped and counted by default, in every mode)"},
    )
    split: SplitName = field(
        default="test",
        metadata={"help": "for a dataset folder: the split to refine (test: the held-out images)"},
    )
    limit: Positive | None = field(default=None, metadata={"help": "only the first N inputs"})
    size: str = field(default="auto", metadata={"help": "openai: output size (auto, 1024x1024, ...)"})
    input_price_per_mtok: NonNegative = field(
        default=0.0, metadata={"help": "openai: price of a million input tokens, for the cost in the summary"}
    )
    output_price_per_mtok: NonNegative = field(
        default=0.0, metadata={"help": "openai: price of a million output tokens"}
    )
    steps: Positive = field(default=28, metadata={"help": "diffusers: denoising steps"})
    guidance_scale: NonNegative = field(default=2.5, metadata={"help": "diffusers: guidance (Kontext's default)"})
    seed: Count = field(default=0, metadata={"help": "diffusers: seed of every edit"})
    device: str = field(default="auto", metadata={"help": "diffusers: auto | cpu | cuda | cuda:N"})
    call_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "diffusers: more arguments for the pipeline call"}
    )
    progress: bool = field(default=True, metadata={"cli": False, "help": "progress bars"})

    def __post_init__(self) -> None:
        if self.max_in_flight < 1 or self.steps < 1:
            raise ValueError("max_in_flight and steps must be >= 1")


@dataclass
class Job:
    image_id: str
    caption: str
    defects: list[Defect]
    text: str  # the defects as the editor reads them (the SDG think + answer)
    png: bytes  # the original, verified, as PNG
    size: tuple[int, int]
    heatmaps: dict[str, bytes] = field(default_factory=dict)  # label -> the verified heatmap image's bytes
    source: str = ""
    annotated: bool = True  # False: nobody has looked for defects yet; skipped, never edited as "clean"

    @property
    def out_id(self) -> str:
        return self.image_id


# ------------------------------------------------------------------ inputs
def _png(image: Any) -> bytes:
    """PNG bytes of the pixels alone: no text chunks, profile or EXIF a source file (or an editor) put there."""
    rgb = image.convert("RGB")
    rgb.info = {}
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return buf.getvalue()


def read_jobs(source: Path, cfg: RefineConfig) -> tuple[list[Job], list[dict[str, Any]], int]:
    """The jobs, the rejects and the number of inputs read: records (with image paths), a dataset folder from
    ``sdg build`` (its images are in it), or predictions + images."""
    from sdg_data.io.jsonl import input_kind, iter_lines

    if input_kind(source) == "dataset":
        return _from_dataset(source, cfg.split)
    first = next((obj for _, obj in iter_lines(source) if isinstance(obj, dict)), {})
    return _from_records(source, cfg) if "image_path" in first else _from_predictions(source, cfg)


def _from_records(source: Path, cfg: RefineConfig):
    from sdg_data.io.images import ImageError, read_verified
    from sdg_data.io.jsonl import screen_records
    from sdg_data.io.paths import Resolver

    ok, rejects, n = screen_records(source, ("caption",), "refine", cfg.image_roots or ())
    resolver = Resolver.for_records(source, cfg.image_roots or ())  # every file a record names: the same roots
    jobs = []
    for line, rec, path in ok:
        try:
            checked = read_verified(path, (rec.width, rec.height), pixels=True)
        except ImageError as exc:
            rejects.append(Reject(f"image: {exc}", "refine", rec.image_id, f"{source}:{line}", line))
            continue
        try:
            maps = _heatmaps(rec, resolver)
        except ImageError as exc:
            rejects.append(Reject(str(exc), "refine", rec.image_id, f"{source}:{line}", line))
            continue
        text = (
            render_response(rec.think, rec.defects) if rec.think else f"<answer>{render_answer(rec.defects)}</answer>"
        )
        jobs.append(Job(rec.image_id, rec.caption or "", list(rec.defects), text, _png(checked.open()),
                        (checked.width, checked.height), maps, f"{source}:{line}", rec.annotated))  # fmt: skip
    return jobs, rejects, n


def _from_dataset(source: Path, split: str):
    """Jobs from one split of a built dataset's annotations, with the images stored in it."""
    from sdg_data.io.sources import iter_images

    rejects: list[Reject] = []
    jobs = []
    for rec, im in iter_images(source, None, rejects, stage="refine", split=split):
        text = (
            render_response(rec.think, rec.defects) if rec.think else f"<answer>{render_answer(rec.defects)}</answer>"
        )
        jobs.append(Job(rec.image_id, rec.caption or "", list(rec.defects), text, _png(im), im.size, {},
                        f"{source}:{rec.image_id}"))  # fmt: skip
    return jobs, rejects, len(jobs) + len(rejects)


def _heatmaps(rec, resolver) -> dict[str, bytes]:
    """The heatmaps a record names (``provenance.heatmaps``), each inside the allowed roots, a regular file and a
    sound image under the pixel cap, as ``image_path`` is; ImageError naming the record and the field."""
    from sdg_data.io.images import ImageError, load_image

    named = (rec.provenance or {}).get("heatmaps") or {}
    where = f"record {rec.image_id!r} field 'provenance.heatmaps'"
    if not isinstance(named, dict):
        raise ImageError(f"{where}: must be a mapping of label to path, got {type(named).__name__}")
    out = {}
    for k, v in named.items():
        try:
            out[str(k)] = load_image(v if isinstance(v, str) else "", resolver).data
        except ImageError as exc:
            raise ImageError(f"{where}[{k!r}]: {exc}") from None
    return out


def _from_predictions(source: Path, cfg: RefineConfig):
    from sdg_data.answer import parse_defect_list, parse_response
    from sdg_data.io.jsonl import iter_jsonl
    from train.detector.detect import DetectConfig, read_inputs

    if not cfg.images:
        raise ValueError(f"{source}: predictions carry no images; give --images (what sdg detect read)")
    found = read_inputs(cfg.images, DetectConfig(allow_missing_caption=True, split=cfg.split))
    items = {it.image_id: it for it in found.items}
    jobs, rejects, n = [], [], 0
    for line, row in iter_jsonl(source):
        n += 1
        iid = row.get("image_id") if isinstance(row, dict) else None
        if not isinstance(iid, str) or iid not in items:
            rejects.append(Reject(f"no image for {iid!r} in {cfg.images}", "refine", iid, f"{source}:{line}", line))
            continue
        if isinstance(row.get("response"), str):
            res, text = parse_response(row["response"]), row["response"]
        else:
            res = parse_defect_list(row.get("defects") or [])
            text = f"<answer>{render_answer(res.defects)}</answer>"
        it = items[iid]
        try:
            im = it.image()
        except (OSError, ValueError) as exc:
            rejects.append(Reject(f"image: {exc}", "refine", iid, f"{source}:{line}", line))
            continue
        caption = row.get("caption") or it.caption
        jobs.append(Job(iid, caption or "", res.defects, text, _png(im), im.size, {}, f"{source}:{line}"))
    return jobs, rejects, n


# ------------------------------------------------------------------ what the editor gets
def instruction(job: Job, mode: str, template: str | None) -> str:
    """The editor's text: the caption-only template, or the default one with the defects' SDG text."""
    path = Path(template) if template else TEMPLATES["caption-only" if mode == "caption-only" else "default"]
    text = path.read_text(encoding="utf-8")
    if "{caption}" not in text:
        raise ValueError(f"refine template {path}: has no {{caption}} placeholder")
    return text.replace("{caption}", job.caption).replace("{defects}", job.text.strip())


def overlay(job: Job, mode: str) -> bytes | None:
    """The second image: the boxes drawn as ``sdg viz`` draws them, or the heatmaps over the image; None for the
    text-only and caption-only modes."""
    from PIL import Image

    from sdg_data.dataset.viz import COLORS, draw_boxes

    if mode in ("text-only", "caption-only"):
        return None
    im = Image.open(io.BytesIO(job.png)).convert("RGB")
    if mode == "boxes+text":
        return _png(draw_boxes(im, job.defects))
    if not job.heatmaps:
        raise ValueError("heatmap+text needs heatmaps (records from sdg import richhf)")
    import numpy as np

    out = np.asarray(im, dtype=np.float32)
    for label, data in job.heatmaps.items():
        with Image.open(io.BytesIO(data)) as m:
            heat = np.asarray(m.convert("L").resize(im.size, Image.Resampling.BILINEAR), dtype=np.float32) / 255
        color = np.array(COLORS.get(label, (250, 200, 0)), dtype=np.float32)
        a = (0.6 * heat)[..., None]
        out = out * (1 - a) + color * a
    return _png(Image.fromarray(out.clip(0, 255).astype("uint8")))


def _settings(cfg: RefineConfig, model: str, tpl_text: str) -> dict[str, Any]:
    return {"mode": cfg.mode, "backend": cfg.backend, "model": model, "size": cfg.size,
            "template_sha256": hashlib.sha256(tpl_text.encode()).hexdigest()[:12]}  # fmt: skip


def _run_settings(cfg: RefineConfig, model: str) -> dict[str, Any]:
    """What decides an edit: a rerun into the same folder reuses finished edits only when all of it is the same."""
    tpl = Path(cfg.template) if cfg.template else None
    sha = hashlib.sha256(tpl.read_bytes()).hexdigest()[:12] if tpl and tpl.is_file() else None
    out = {"mode": cfg.mode, "backend": cfg.backend, "model": model, "template_sha256": sha}
    if cfg.backend == "openai":
        out["size"] = cfg.size
    if cfg.backend == "diffusers":
        out.update(steps=cfg.steps, guidance_scale=cfg.guidance_scale, seed=cfg.seed)
    return out


def _same_run(out: Path, settings: dict[str, Any]) -> None:
    """Record this run's settings in ``OUT/refine.run.json``, or refuse when the folder's finished edits were made
    with others: they would be reused as if they were this run's (another mode's or backend's edits)."""

    from sdg_data.io.files import write_json
    from sdg_data.io.sidecar import read_json_object

    path = out / "refine.run.json"
    before = read_json_object(path)  # a regular file only, capped: a link or a list there is no earlier run
    rows = out / "refine.rows.jsonl"
    if before is not None and before != settings and rows.is_file() and rows.stat().st_size > 0:
        diff = ", ".join(f"{k} {before.get(k)!r} -> {v!r}" for k, v in settings.items() if before.get(k) != v)
        raise ValueError(
            f"{out} holds edits made with other settings ({diff}); give another --out, or delete "
            f"{out / 'refine.rows.jsonl'} to redo them"
        )
    if before != settings:
        write_json(path, settings)


# ------------------------------------------------------------------ the run
def refine(source: str | Path, out_dir: str | Path, cfg: RefineConfig) -> dict[str, Any]:
    """Run ``sdg refine``; returns the summary (also ``OUT/refine.summary.json``)."""
    from sdg_data.io.files import AppendSink, read_finished, write_jsonl
    from sdg_data.io.report import StageReport

    t0 = time.perf_counter()
    from sdg_data.io.files import output_root

    source, out = Path(source), output_root(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs, rejects, n_read = read_jobs(source, cfg)
    report = StageReport("refine", read=n_read)
    report.add(rejects)
    unannotated = [j for j in jobs if not j.annotated]  # no verdict yet: not clean, nothing to guide an edit
    clean = [j for j in jobs if j.annotated and not j.defects and not cfg.include_clean]  # the same in every mode
    todo = [j for j in jobs if j.annotated and (j.defects or cfg.include_clean)]
    limited = todo[cfg.limit :] if cfg.limit is not None else []
    todo = todo[: cfg.limit] if cfg.limit is not None else todo
    report.left_out = len(clean) + len(unannotated) + len(limited)
    model = cfg.model or DEFAULT_MODELS[cfg.backend]
    _same_run(out, _run_settings(cfg, model))
    done = read_finished(out / "refine.rows.jsonl")
    sink = AppendSink(out / "refine.rows.jsonl")
    runner = {"openai": _run_api, "diffusers": _run_local, "dry-run": _run_dry}[cfg.backend]
    failures: dict[str, str] = {}
    pending = [j for j in todo if j.out_id not in done]
    try:
        stats = runner(pending, cfg, model, out, sink, failures)
    finally:
        sink.close()
    finished = read_finished(out / "refine.rows.jsonl")
    rows = []
    for j in todo:
        if j.out_id in finished:
            rows.append(finished[j.out_id])
        else:
            report.reject(failures.get(j.out_id, "not finished"), j.image_id, j.source, None, stage="edit")
    report.kept = len(rows)
    if not report.failed:
        write_jsonl(out / "refined.jsonl", rows)
    report.extras = {
        "mode": cfg.mode,
        "backend": cfg.backend,
        "model": model,
        "clean_skipped": len(clean),
        "not_annotated_skipped": len(unannotated),
        "left_out_by_limit": len(limited),
        "resumed": len(todo) - len(pending),
        "seconds": round(time.perf_counter() - t0, 2),
        **stats,
    }
    return report.write(out)


def _record(job: Job, cfg: RefineConfig, model: str, rel: str, size: tuple[int, int], extra: dict) -> dict:
    from sdg_data.records import ImageRecord

    prov = {"stage": "refine", "source_image_id": job.image_id, "mode": cfg.mode, "backend": cfg.backend,
            "model": model, "defects_given": len(job.defects), **extra}  # fmt: skip
    rec = ImageRecord(image_id=job.out_id, defects=[], annotated=False, image_path=rel, width=size[0], height=size[1],
                      caption=job.caption, provenance=prov)  # fmt: skip
    return rec.to_json()


def _save_edit(data: bytes, out: Path, job: Job, cfg: RefineConfig) -> tuple[str, tuple[int, int]]:
    """Verify the editor's bytes as an image and store it (atomically) under edits/, re-encoded from the decoded
    pixels: what a remote server sent beside the pixels (text chunks once held the key it saw) is not stored."""
    from sdg_data.io.files import write_bytes
    from sdg_data.io.images import check_bytes
    from sdg_data.io.paths import safe_filename

    checked = check_bytes(data)
    rel = f"edits/{safe_filename(job.image_id)}.{cfg.mode.replace('+', '_')}.png"
    write_bytes(out / rel, _png(checked.open()))
    return rel, (checked.width, checked.height)


def _run_dry(jobs: list[Job], cfg: RefineConfig, model: str, out: Path, sink, failures) -> dict:
    """The request bundles: original.png, overlay.png (when the mode has one), instruction.txt, request.json."""
    import json

    from sdg_data.io.files import write_bytes, write_text
    from sdg_data.io.paths import safe_filename

    for job in jobs:
        try:
            folder = out / "requests" / f"{safe_filename(job.image_id)}.{cfg.mode.replace('+', '_')}"
            text = instruction(job, cfg.mode, cfg.template)
            second = overlay(job, cfg.mode)
            write_bytes(folder / "original.png", job.png)
            if second is not None:
                write_bytes(folder / "overlay.png", second)
            write_text(folder / "instruction.txt", text)
            req = {**_settings(cfg, model, text), "image_id": job.image_id, "images": ["original.png"] +
                   (["overlay.png"] if second is not None else [])}  # fmt: skip
            write_text(folder / "request.json", json.dumps(req, indent=2))
        except (OSError, ValueError) as exc:
            failures[job.out_id] = str(exc)
            continue
        rel = str((folder / "original.png").relative_to(out))
        sink.write(_record(job, cfg, model, rel, job.size, {"request": str(folder.relative_to(out))}))
    return {}


def _run_local(jobs: list[Job], cfg: RefineConfig, model: str, out: Path, sink, failures) -> dict:
    """A diffusers editing pipeline, one image at a time (it takes the original; the boxes are in the text)."""
    import diffusers
    import torch
    from PIL import Image

    if not jobs:
        return {}
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    from sdg_data.io.hub import require_model

    require_model(model, "--model", "editor")
    pipe = diffusers.DiffusionPipeline.from_pretrained(model, dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    import inspect

    accepted = set(inspect.signature(pipe.__call__).parameters)
    for job in jobs:
        t1 = time.perf_counter()
        try:
            text = instruction(job, cfg.mode, cfg.template)
            im = Image.open(io.BytesIO(job.png)).convert("RGB")
            gen = torch.Generator("cpu").manual_seed(cfg.seed)
            # the edit keeps the original's size (to the 16 px grid these transformers need) unless told otherwise;
            # Kontext sizes its output by max_area, so that goes too where the pipeline takes it
            w, h = max(16, im.width // 16 * 16), max(16, im.height // 16 * 16)
            size = {k: v for k, v in (("width", w), ("height", h), ("max_area", w * h)) if k in accepted}
            with torch.inference_mode():
                edited = pipe(image=im, prompt=text, num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                              generator=gen, **{**size, **cfg.call_kwargs}).images[0]  # fmt: skip
            rel, size = _save_edit(_png(edited), out, job, cfg)
        except Exception as exc:  # noqa: BLE001 - one failed edit is that image's reject
            failures[job.out_id] = f"edit: {type(exc).__name__}: {str(exc)[:300]}"
            continue
        sink.write(_record(job, cfg, model, rel, size, {"seconds": round(time.perf_counter() - t1, 3),
                                                        "seed": cfg.seed, "steps": cfg.steps}))  # fmt: skip
    return {}


def _run_api(jobs: list[Job], cfg: RefineConfig, model: str, out: Path, sink, failures) -> dict:
    """The image-edit API, ``max_in_flight`` at once, with the chat client's retries; tokens and cost counted."""
    from sdg_data.io.api_client import AuthError, ChatClient, TransportError, drain

    stats: dict[str, Any] = {}

    async def run() -> None:
        client = ChatClient(cfg, model)

        async def handle(job: Job) -> None:
            t1 = time.perf_counter()
            try:
                text = instruction(job, cfg.mode, cfg.template)
                second = overlay(job, cfg.mode)
                images = [("original.png", job.png)] + ([("overlay.png", second)] if second is not None else [])
                data = await client.edit_image(images, text, job.image_id, size=cfg.size)
                rel, size = _save_edit(data, out, job, cfg)
            except AuthError:
                raise
            except (TransportError, ValueError, OSError) as exc:
                failures[job.out_id] = f"edit: {exc}"
                return
            sink.write(_record(job, cfg, model, rel, size, {"seconds": round(time.perf_counter() - t1, 3)}))

        try:
            await drain(jobs, handle, cfg.max_in_flight)
        finally:
            s = client.stats
            stats.update(requests=s.requests, retries=s.transient_retries, faults=dict(s.faults),
                         input_tokens=s.prompt_tokens, output_tokens=s.completion_tokens)  # fmt: skip
            await client.close()

    if jobs:
        asyncio.run(run())
    cost = (stats.get("input_tokens", 0) * cfg.input_price_per_mtok
            + stats.get("output_tokens", 0) * cfg.output_price_per_mtok) / 1e6  # fmt: skip
    return {**stats, "cost": round(cost, 4)}
