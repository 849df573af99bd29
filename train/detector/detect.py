"""``sdg detect``: run an SDG detector over images and write predictions that ``sdg eval`` and
``sdg annotate predict`` read.

Inputs: a folder of images (the caption of ``x.png`` is read from ``x.txt`` beside it), a JSONL of core records
(image path and caption), or a folder written by ``sdg build`` / a parquet shard (its ``test`` config by default).

Backends: ``transformers`` loads the checkpoint here and generates in batches; ``openai`` sends each image to an
OpenAI-compatible server (vLLM or SGLang serving the checkpoint) with bounded concurrency, a timeout and retries.

Each prediction line keeps the raw text (``response``), the defects the core parser got from it and the format
verdict. Lines are appended as they finish, so a rerun after a crash only does what is missing; at the end the file
is rewritten in input order. Every input ends in ``predictions.jsonl`` or ``detect.rejects.jsonl`` (with its reason)
and ``detect.summary.json`` reconciles the counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from sdg_data.answer import parse_response
from sdg_data.config import Bounds, NonNegative, Positive
from sdg_data.detector_prompt import conversation, template_id
from sdg_data.io.api_client import Transport, transport_defaults
from sdg_data.io.arrow import SplitName
from sdg_data.io.files import AppendSink, read_finished, write_jsonl
from sdg_data.io.jsonl import screen_records
from sdg_data.io.progress import progress_bar
from sdg_data.io.report import StageReport
from sdg_data.records import Reject
from sdg_data.scoring.uncertainty import disagreement


log = logging.getLogger(__name__)

DEFAULT_DETECTOR = "P1n3/sdg-detector-grpo"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass
@transport_defaults(
    base_url="http://127.0.0.1:17142/v1", api_key_env="SDG_DETECTOR_API_KEY", max_in_flight=32, timeout_s=300.0
)
class DetectConfig(Transport):
    RECIPE_KIND = "detect"  # bundled recipes of this kind are found by name (sdg recipes)

    backend: Literal["transformers", "openai"] = field(
        default="transformers", metadata={"help": "local and batched, or a vLLM / SGLang server"}
    )
    model: str = field(
        default=DEFAULT_DETECTOR, metadata={"help": "a checkpoint id or folder; for openai, the served model name"}
    )
    revision: str | None = field(default=None, metadata={"help": "the checkpoint's revision on the Hub"})
    prompt_template: str | None = field(
        default=None, metadata={"help": "the user-turn template file ({caption}); default sdg_data/prompts"}
    )
    box_order: Literal["xyxy", "yxyx"] = field(default="xyxy", metadata={"help": "how the detector writes box_2d"})
    dataset_config: str = field(
        default="annotations",
        metadata={"help": "for a dataset folder: the config to read (annotations: one row per image, every split)"},
    )
    split: SplitName = field(
        default="test",
        metadata={"help": "for a dataset folder: the split to read (test: the held-out images)"},
    )
    allow_missing_caption: bool = field(
        default=False, metadata={"help": "else an image without a caption is rejected"}
    )
    limit: Positive | None = field(default=None, metadata={"help": "only the first N images"})
    max_new_tokens: Positive = field(default=4096, metadata={"help": "longest response"})
    temperature: NonNegative = field(default=0.0, metadata={"help": "0 = greedy (reproducible evaluation)"})
    samples: Positive = field(
        default=1,
        metadata={
            "help": "answers per image; with more than 1 (and --temperature > 0) each row also holds every answer's "
            "defects (samples) and how much they disagree (uncertainty, 0-1), which sdg annotate push --order "
            "puts first in the annotators' queue"
        },
    )
    top_p: Annotated[float, Bounds(gt=0, le=1)] = field(
        default=1.0, metadata={"help": "nucleus sampling, when temperature > 0"}
    )
    batch_size: Positive = field(default=8, metadata={"help": "transformers: images per generate call"})
    device: str = field(default="auto", metadata={"help": "transformers: auto | cpu | cuda | cuda:N"})
    dtype: str = field(
        default="auto",
        metadata={"help": "transformers: auto (bf16 on GPU, fp32 on CPU) | bfloat16 | float16 | float32"},
    )
    min_pixels: Positive | None = field(
        default=200_704, metadata={"help": "transformers: fewest pixels an image is resized to"}
    )
    max_pixels: Positive | None = field(
        default=1_280_000, metadata={"help": "transformers: most pixels an image is resized to"}
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "transformers: sdpa, flash_attention_2, eager"}
    )
    image_max_side: Positive = field(
        default=1024, metadata={"help": "openai: the image is resized so its longer side is at most this"}
    )
    image_format: Literal["png", "jpeg"] = field(
        default="png", metadata={"help": "openai: how the image is encoded for the request"}
    )
    progress: bool = field(default=True, metadata={"cli": False, "help": "progress bars"})

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_in_flight", "max_new_tokens", "image_max_side"):
            if getattr(self, name) < 1:
                raise ValueError(f"DetectConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature < 0:
            raise ValueError(f"DetectConfig.temperature must be >= 0, got {self.temperature}")
        if self.samples < 1 or (self.samples > 1 and self.temperature == 0):
            raise ValueError(
                f"--samples {self.samples}: several answers per image need --temperature > 0 (greedy decoding gives "
                "the same answer every time)"
            )
        default_url = type(self).__dataclass_fields__["base_url"].default
        if self.backend == "transformers" and self.base_url != default_url:
            raise ValueError(
                f"--base-url {self.base_url} is for a served detector: add --backend openai (or leave --base-url out "
                "to run the model here)"
            )


# ------------------------------------------------------------------ inputs
@dataclass
class Item:
    image_id: str
    caption: str
    generator: str | None
    source: str  # where it came from, for errors and provenance
    path: Path | None = None
    data: bytes | None = None
    size: tuple[int | None, int | None] = (None, None)  # the record's stated width and height, checked

    def image(self):
        """The verified image (format, pixel cap, complete decode): ImageError or OSError otherwise."""
        from sdg_data.io.images import check_bytes

        data = self.path.read_bytes() if self.path is not None else (self.data or b"")
        return check_bytes(data, self.size, path=self.path, pixels=True).open().convert("RGB")


@dataclass
class Inputs:
    items: list[Item] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    read: int = 0
    limited_out: int = 0  # usable inputs left out by ``limit``


def _folder_items(root: Path, cfg: DetectConfig) -> Inputs:
    out = Inputs()
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    from sdg_data.io.paths import PathError, Resolver

    resolver = Resolver(root)
    for p in files:
        out.read += 1
        iid = p.relative_to(root).with_suffix("").as_posix()
        try:
            p = resolver.resolve(str(p.relative_to(root)))  # a symlink that leads out of the folder is refused
        except PathError as exc:
            out.rejects.append(Reject(f"image: {exc}", "detect", iid, str(p)))
            continue
        from sdg_data.io.sidecar import read_caption

        caption, why = read_caption(p.with_suffix(".txt"))
        if caption is None and cfg.allow_missing_caption:
            caption = ""
        elif caption is None:
            out.rejects.append(Reject(f"no caption: {why}", "detect", iid, str(p)))
            continue
        out.items.append(Item(iid, caption, None, str(p), path=p))
    if out.read == 0:
        raise FileNotFoundError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return out


def _jsonl_items(path: Path, cfg: DetectConfig) -> Inputs:
    require = () if cfg.allow_missing_caption else ("caption",)
    ok, rejects, n = screen_records(path, require=require, stage="detect")
    out = Inputs(read=n)
    out.rejects = rejects
    for lineno, rec, img in ok:
        out.items.append(
            Item(
                rec.image_id,
                rec.caption or "",
                rec.generator,
                f"{path}:{lineno}",
                path=img,
                size=(rec.width, rec.height),
            )
        )
    return out


def _parquet_items(path: Path, cfg: DetectConfig) -> Inputs:
    import pyarrow.parquet as pq

    from sdg_data.io.arrow import read_rows

    if path.is_file():
        files = [path]
    else:
        from sdg_data.io.arrow import SplitError, dataset_shards, split_shards

        files = dataset_shards(path, cfg.dataset_config, None if cfg.split == "all" else cfg.split)
        if not files:  # never another split in its place: the error names the split and what the folder has
            split_shards(path, cfg.split)
            raise SplitError(f"{path}: its {cfg.dataset_config!r} config has no {cfg.split!r} shards")
    out = Inputs()
    for f in files:
        names = pq.read_schema(f).names
        image_col = "image" if "image" in names else "images" if "images" in names else None
        if image_col is None or "image_id" not in names:
            raise ValueError(f"{f}: needs 'image_id' and an 'image' (or 'images') column; has {names}")
        cols = ["image_id", image_col] + [c for c in ("caption", "generator") if c in names]
        for batch in read_rows(f, cols).to_batches(max_chunksize=256):  # one row per image (a train table's pairs)
            for row in batch.to_pylist():
                out.read += 1
                img = row[image_col]
                img = img[0] if isinstance(img, list) and img else img
                data = img.get("bytes") if isinstance(img, dict) else None
                iid = row["image_id"]
                caption = row.get("caption")
                if not data:
                    out.rejects.append(Reject("image: no bytes in the row", "detect", iid, str(f)))
                elif not caption and not cfg.allow_missing_caption:
                    out.rejects.append(Reject("caption: missing", "detect", iid, str(f)))
                else:
                    out.items.append(Item(iid, caption or "", row.get("generator"), str(f), data=data))
    return out


def read_inputs(source: str | Path, cfg: DetectConfig) -> Inputs:
    """Whatever the user pointed at, as items plus rejects; duplicate image ids are rejected, not overwritten."""
    from sdg_data.io.jsonl import input_kind

    p = Path(source)
    kind = input_kind(p)
    if kind == "images":
        got = _folder_items(p, cfg)
    elif kind == "jsonl":
        got = _jsonl_items(p, cfg)
    else:
        got = _parquet_items(p, cfg)
    seen: set[str] = set()
    unique = []
    for it in got.items:
        if it.image_id in seen:
            got.rejects.append(Reject("image_id: duplicate", "detect", it.image_id, it.source))
            continue
        seen.add(it.image_id)
        unique.append(it)
    got.items = unique
    if cfg.limit is not None:
        got.limited_out = max(0, len(got.items) - cfg.limit)
        got.items = got.items[: cfg.limit]
    return got


# ------------------------------------------------------------------ backends
class TransformersDetector:
    """A local checkpoint, generating for ``batch_size`` images at a time (left padding)."""

    def __init__(self, cfg: DetectConfig):
        import torch

        from sdg_data.io.hub import require_model
        from train.detector.modeling import load_model, load_processor

        require_model(cfg.model, "--model", "detector")  # in seconds, not after minutes of retries
        self.cfg = cfg
        device = cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = cfg.dtype
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") else "float32"
        self.device = device
        self.processor = load_processor(
            cfg.model,
            min_pixels=cfg.min_pixels,
            max_pixels=cfg.max_pixels,
            revision=cfg.revision,
            padding_side="left",
        )
        self.model = load_model(
            cfg.model, dtype=dtype, revision=cfg.revision, attn_implementation=cfg.attn_implementation
        ).to(device)
        self.model.eval()
        tok = self.processor.tokenizer
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else tok.eos_token_id
        self.stop_ids = set(eos if isinstance(eos, list) else [eos]) | {tok.pad_token_id}
        self.stop_ids.discard(None)

    def generate(self, items: Sequence[Item]) -> list[str]:
        import torch

        cfg = self.cfg
        chats = [conversation(it.caption, cfg.prompt_template, image=it.image()) for it in items]
        inputs = self.processor.apply_chat_template(
            chats,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True},
        )
        inputs = inputs.to(self.device)
        sample = cfg.temperature > 0
        kwargs: dict[str, Any] = {"max_new_tokens": cfg.max_new_tokens, "do_sample": sample}
        if sample:
            kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **kwargs)
        new = out[:, inputs["input_ids"].shape[1] :].tolist()
        texts = []
        for ids in new:
            cut = next((i for i, t in enumerate(ids) if t in self.stop_ids), len(ids))
            # special tokens are kept: <think> is one in some tokenizers, and the parser needs it
            texts.append(self.processor.tokenizer.decode(ids[:cut], skip_special_tokens=False))
        return texts

    def describe(self) -> dict[str, Any]:
        return {"device": self.device, "dtype": str(self.model.dtype).removeprefix("torch.")}


class ApiDetector:
    """A served checkpoint behind an OpenAI-compatible chat endpoint, through the toolkit's one chat client."""

    def __init__(self, cfg: DetectConfig):
        from sdg_data.io.api_client import ChatClient

        self.cfg = cfg
        self.client = ChatClient(cfg, cfg.model, cfg.temperature, cfg.max_new_tokens)
        self.stats = self.client.stats

    async def one(self, item: Item) -> str:
        from sdg_data.io.images import data_url

        url = await asyncio.to_thread(
            lambda: data_url(item.image(), self.cfg.image_max_side, fmt=self.cfg.image_format)
        )
        messages = conversation(item.caption, self.cfg.prompt_template, image=url, flat_system=True)
        return await self.client.complete(messages, item.image_id)

    def describe(self) -> dict[str, Any]:
        return {"base_url": self.cfg.base_url}


# ------------------------------------------------------------------ output
def _prediction(item: Item, texts: str | list[str], cfg: DetectConfig, meta: dict[str, Any]) -> dict[str, Any]:
    """The row of one image: the first answer as the prediction; with several, every answer's defects and their
    disagreement (a format failure counts as an answer with no box)."""
    texts = [texts] if isinstance(texts, str) else texts
    parsed = [parse_response(t, order=cfg.box_order) for t in texts]
    text, res = texts[0], parsed[0]
    extra: dict[str, Any] = {}
    if len(texts) > 1:
        extra["samples"] = [{"format_ok": r.format_ok, "defects": [d.to_json() for d in r.defects]} for r in parsed]
        extra["uncertainty"] = round(disagreement([r.defects for r in parsed]), 4)
    return {
        "image_id": item.image_id,
        "caption": item.caption,
        "generator": item.generator,
        "response": text,
        "format_ok": res.format_ok,
        "format_reason": res.reason,
        "defects": [d.to_json() for d in res.defects],
        **extra,
        "provenance": meta,
    }


def _batches(items: Sequence[Item], n: int) -> Iterator[list[Item]]:
    for i in range(0, len(items), n):
        yield list(items[i : i + n])


def _provenance(cfg: DetectConfig) -> dict[str, Any]:
    """What every prediction records about the detector that wrote it."""
    return {
        "backend": cfg.backend,
        "model": cfg.model,
        "revision": cfg.revision,
        "prompt": template_id(cfg.prompt_template),
        "max_new_tokens": cfg.max_new_tokens,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p if cfg.temperature > 0 else None,
        "samples": cfg.samples,
    }


def detect(source: str | Path, out_dir: str | Path, cfg: DetectConfig) -> dict[str, Any]:
    """Run the detector over ``source``; returns the summary also written to ``detect.summary.json``."""

    t0 = time.perf_counter()
    from sdg_data.io.files import output_root

    out_dir = output_root(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pred_path = out_dir / "predictions.jsonl"
    inputs = read_inputs(source, cfg)
    done = read_finished(pred_path)
    todo = [it for it in inputs.items if it.image_id not in done]
    meta = _provenance(cfg)
    failures: dict[str, str] = {}
    bar = progress_bar(
        total=len(inputs.items),
        initial=len(inputs.items) - len(todo),
        desc="detect",
        unit="img",
        enabled=cfg.progress,
    )
    sink = AppendSink(pred_path)
    try:
        if todo and cfg.backend == "transformers":
            _run_local(todo, cfg, meta, sink, failures, bar)
        elif todo:
            det_api = ApiDetector(cfg)
            meta.update(det_api.describe())
            asyncio.run(_run_api(det_api, todo, cfg, meta, sink, failures, bar))
    finally:
        sink.close()
        bar.close()

    # final file in input order; anything in it that is no longer an input is kept out and counted
    done = read_finished(pred_path)
    order = [it.image_id for it in inputs.items if it.image_id in done]
    stale = sorted(set(done) - {it.image_id for it in inputs.items})
    by_id = {it.image_id: it for it in inputs.items}
    report = StageReport("detect", read=inputs.read, kept=len(order), left_out=inputs.limited_out)
    report.add(inputs.rejects)
    for iid, why in failures.items():
        report.reject(why, iid, by_id[iid].source if iid in by_id else None)
    if not report.failed:  # a run that kept nothing leaves the predictions file as it was
        write_jsonl(pred_path, (done[i] for i in order))
    n_ok = sum(done[i].get("format_ok") is True for i in order)  # a resumed row is read as written, not trusted
    report.extras = {
        "source": str(source),
        "predicted": len(order),
        "left_out_by_limit": inputs.limited_out,
        "format_ok": n_ok,
        "format_fail": len(order) - n_ok,
        "resumed": len(inputs.items) - len(todo),
        "stale_predictions_dropped": len(stale),
        "seconds": round(time.perf_counter() - t0, 3),
        "config": {k: v for k, v in asdict(cfg).items() if k != "progress"},
    }
    summary = report.write(out_dir)
    return summary


def _run_local(todo: list[Item], cfg: DetectConfig, meta: dict, sink: AppendSink, failures: dict, bar) -> None:
    """The transformers backend: batches; an unreadable image in a batch is found by redoing it one by one."""
    det = TransformersDetector(cfg)
    meta.update(det.describe())
    for batch in _batches(todo, cfg.batch_size):
        runs = [_generate(det, batch, failures) for _ in range(cfg.samples)]  # one batch per sampled answer
        for k, it in enumerate(batch):
            texts = [run[k] for run in runs]
            if None not in texts:
                sink.write(_prediction(it, texts, cfg, meta))
            bar.update()


def _generate(det: TransformersDetector, batch: list[Item], failures: dict) -> list[str | None]:
    try:
        return det.generate(batch)
    except (OSError, ValueError) as exc:
        texts: list[str | None] = []
        for it in batch:
            try:
                texts.extend(det.generate([it]))
            except (OSError, ValueError) as one_exc:
                failures[it.image_id] = f"image: {type(one_exc).__name__}: {one_exc}"
                texts.append(None)
        log.debug("batch fell back to single images: %s", exc)
        return texts


async def _run_api(det: ApiDetector, todo: list[Item], cfg: DetectConfig, meta, sink, failures, bar) -> None:
    from sdg_data.io.api_client import AuthError, TransportError, drain

    refused: list[AuthError] = []

    async def handle(it: Item) -> None:
        if refused:  # the key was refused: send nothing more
            return
        try:
            texts = list(await asyncio.gather(*(det.one(it) for _ in range(cfg.samples))))
            sink.write(_prediction(it, texts, cfg, meta))
        except AuthError as exc:
            refused.append(exc)
        except TransportError as exc:
            failures[it.image_id] = f"transport: {exc}"
        except (OSError, ValueError) as exc:  # ImageError: not an image, truncated, over the pixel cap
            failures[it.image_id] = f"image: {exc}"
        bar.update()

    try:
        await drain(todo, handle, cfg.max_in_flight)
    finally:
        await det.client.close()
    if refused:
        raise refused[0]
