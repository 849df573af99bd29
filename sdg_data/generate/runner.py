"""``sdg generate``: prompts -> PNGs and a manifest of core records, resumable and sharded over ranks.

Work is planned deterministically (every rank plans the same list), then each generator's items are split by rank
(item i goes to rank i mod world), so no two ranks write the same image. Each rank appends to its own
``manifest.rank<k>.jsonl`` after the PNG is in place (written to a temporary name, then renamed), so a killed run
leaves either a finished image or nothing. On rerun, finished images are skipped. When every rank is done, rank 0
merges the rank files into ``manifest.jsonl`` (plan order) and ``generate.rejects.jsonl``, and writes
``generate.summary.json``, whose counts reconcile.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from sdg_data.config import Count, Fraction, NonNegative, Positive
from sdg_data.generate.prompts import Prompt, decide_split, read_prompts
from sdg_data.generate.registry import GeneratorSpec, resolve, slug
from sdg_data.io.files import AppendSink, atomic_file, read_finished, sweep_stale_temps, write_json, write_jsonl
from sdg_data.io.progress import progress_bar
from sdg_data.io.report import StageReport
from sdg_data.io.sidecar import iter_json_lines, read_json_object
from sdg_data.records import REJECT_KEYS, ImageRecord, Reject
from sdg_data.splits import PAPER_TEST_FRACTION


log = logging.getLogger(__name__)
SDG30K_GENERATORS = ["FLUX.2-dev", "Z-Image-Turbo", "LongCat-Image", "SANA-1.5-1.6B"]


@dataclass
class GenerateConfig:
    generator: list[str] = field(
        default_factory=lambda: list(SDG30K_GENERATORS),
        metadata={
            "flag": "--generator",
            "help": (
                "Repeatable. FLUX.2-dev, Z-Image-Turbo, LongCat-Image, SANA-1.5-1.6B (default: "
                "all four), or any diffusers model id or local pipeline folder."
            ),
        },
    )
    model_root: str | None = field(
        default=None, metadata={"help": "folder with local copies of the four: ROOT/flux2, z-image, longcat, sana"}
    )
    model_paths: dict[str, str] = field(
        default_factory=dict, metadata={"help": "registry name -> local copy of its checkpoint"}
    )
    assign: Literal["spread", "all"] = field(
        default="spread", metadata={"help": "spread: each prompt to one generator, evenly; all: to every one"}
    )
    seeds: Positive = field(
        default=1, metadata={"help": "images per (prompt, generator), seeds base_seed .. base_seed + seeds - 1"}
    )
    base_seed: Count = field(default=0, metadata={"help": "the first seed"})
    height: Positive = field(default=1024, metadata={"help": "image height in pixels (a multiple of 16)"})
    width: Positive = field(default=1024, metadata={"help": "image width in pixels (a multiple of 16)"})
    steps: Positive | None = field(
        default=None, metadata={"help": "denoising steps; default: the generator's recommended value"}
    )
    guidance_scale: NonNegative | None = field(
        default=None, metadata={"help": "default: the generator's recommended value"}
    )
    call_kwargs: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata={"help": "per generator name, extra call args"}
    )
    lora: str | None = field(
        default=None,
        metadata={"help": "a LoRA to load into the pipeline: a folder (e.g. sdg train boxflow's) or .safetensors"},
    )
    lora_scale: float = field(default=1.0, metadata={"help": "how strongly the LoRA applies (0 = the base model)"})
    dtype: str | None = field(
        default=None, metadata={"help": "default: the generator's (bf16 for the four); float32 on CPU"}
    )
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    cpu_offload: bool = field(
        default=False, metadata={"help": "enable_model_cpu_offload: one component on the GPU at a time"}
    )
    vae_tiling: bool = field(default=False, metadata={"help": "decode in tiles (large images on small GPUs)"})
    batch_size: Positive = field(default=1, metadata={"help": "prompts per pipeline call"})
    test_fraction: Fraction = field(
        default=PAPER_TEST_FRACTION,
        metadata={"help": "share of prompts held out, when the input does not fix a split"},
    )
    split_salt: str = field(default="sdg", metadata={"help": "changes which prompts go to test"})
    max_retries: Count = field(default=2, metadata={"help": "per image, after an error, a NaN or an all-black output"})
    black_threshold: NonNegative = field(
        default=2.0, metadata={"help": "mean pixel value (0-255) at or below which an image counts as all black"}
    )
    safety_checker: str | None = field(
        default=None, metadata={"help": '"module:function" taking (PIL image, prompt) -> (ok, reason)'}
    )
    limit: Positive | None = field(default=None, metadata={"help": "only the first N prompts"})
    progress: bool = field(default=True, metadata={"cli": False, "help": "progress bars"})

    def __post_init__(self) -> None:
        if self.seeds < 1 or self.batch_size < 1 or self.max_retries < 0:
            raise ValueError("GenerateConfig: seeds and batch_size must be >= 1, max_retries >= 0")
        if self.height % 16 or self.width % 16:
            raise ValueError(
                f"GenerateConfig: height and width must be multiples of 16, got {self.height}x{self.width}"
            )
        if not 0 <= self.test_fraction < 1:
            raise ValueError(f"GenerateConfig.test_fraction must be in [0, 1), got {self.test_fraction}")
        if not self.generator:
            raise ValueError("GenerateConfig.generator is empty (name at least one)")


@dataclass(frozen=True)
class Item:
    index: int  # position in the plan
    prompt: Prompt
    spec: GeneratorSpec
    seed: int
    split: str
    image_id: str
    rel_path: str  # PNG path relative to the output folder


def image_id(spec: GeneratorSpec, prompt: str, seed: int, settings: dict[str, Any]) -> str:
    """Stable over reruns and machines: generator, prompt, seed and the settings that change the pixels."""
    key = json.dumps([spec.model_id, spec.revision, prompt, seed, settings], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def _settings(spec: GeneratorSpec, cfg: GenerateConfig) -> dict[str, Any]:
    kwargs = {**spec.call_kwargs, **cfg.call_kwargs.get(spec.name, {})}
    out = {
        "height": cfg.height,
        "width": cfg.width,
        "steps": cfg.steps or spec.steps,
        "guidance_scale": cfg.guidance_scale if cfg.guidance_scale is not None else spec.guidance_scale,
        "call_kwargs": kwargs,
    }
    if cfg.lora:  # the LoRA's content changes the pixels: it joins the image id (absent without one: ids unchanged)
        out["lora"] = {"sha256": lora_file(cfg.lora)[1], "scale": cfg.lora_scale}
    return out


def lora_file(path: str) -> tuple[Path, str]:
    """The LoRA weights file a ``--lora`` points at (a folder holding one .safetensors, or the file) and its
    content hash (cached by path, size and mtime: a plan asks once per image)."""
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("*.safetensors"))
        if len(found) != 1:
            raise ValueError(f"--lora {path}: expected one .safetensors file in the folder, found {len(found)}")
        p = found[0]
    elif not p.is_file():
        raise ValueError(f"--lora {path}: no such file or folder")
    st = p.stat()
    return p, _hash_file(str(p), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _hash_file(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def plan(prompts: list[Prompt], cfg: GenerateConfig) -> list[Item]:
    """Every (prompt, generator, seed) to make, in a fixed order that every rank computes alike."""
    specs = [resolve(g, cfg.model_paths) for g in cfg.generator]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"generators repeat a name: {names}")
    items: list[Item] = []
    for i, p in enumerate(prompts):
        chosen = specs if cfg.assign == "all" else [specs[i % len(specs)]]  # round robin: even counts
        split = decide_split(p, cfg.test_fraction, cfg.split_salt)
        for spec in chosen:
            st = _settings(spec, cfg)
            for k in range(cfg.seeds):
                seed = cfg.base_seed + k
                iid = image_id(spec, p.text, seed, st)
                rel = f"images/{slug(spec.name)}/{iid}.png"
                items.append(Item(len(items), p, spec, seed, split, iid, rel))
    return items


# ------------------------------------------------------------------ distributed helpers
def _dist() -> tuple[int, int, Any]:
    """(rank, world size, state): accelerate's state when launched with several processes, else (0, 1, None)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, None
    import torch
    from accelerate import PartialState

    # without cpu=True, accelerate on a machine with no GPU quietly gives every process rank 0 of 1
    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes != world:
        raise RuntimeError(f"launcher says WORLD_SIZE={world} but accelerate sees {state.num_processes} processes")
    return state.process_index, state.num_processes, state


def _barrier(state: Any) -> None:
    if state is not None:
        state.wait_for_everyone()


# ------------------------------------------------------------------ pipeline
def _versions() -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    return {"diffusers": diffusers.__version__, "transformers": transformers.__version__, "torch": torch.__version__}


def _device(cfg: GenerateConfig, state: Any) -> str:
    import torch

    if cfg.device != "auto":
        return cfg.device
    if state is not None and str(state.device) != "cpu":
        return str(state.device)
    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype(spec: GeneratorSpec, cfg: GenerateConfig, device: str):
    import torch

    name = cfg.dtype or spec.dtype
    if name == "auto" or device == "cpu" and cfg.dtype is None:
        name = "bfloat16" if device.startswith("cuda") else "float32"
    table = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    if name not in table:
        raise ValueError(f"dtype must be one of {sorted(table)} or auto, got {name!r}")
    return table[name]


def load_pipeline(spec: GeneratorSpec, cfg: GenerateConfig, device: str):
    """The diffusers pipeline of ``spec`` on ``device`` with the memory options of the config."""
    import diffusers

    from sdg_data.io.vision_compat import has_torchvision, image_only

    dtype = _dtype(spec, cfg, device)
    cls = getattr(diffusers, spec.pipeline_class) if spec.pipeline_class else diffusers.DiffusionPipeline
    kwargs: dict[str, Any] = {"dtype": dtype}
    if spec.revision:
        kwargs["revision"] = spec.revision
    root = Path(spec.model_id)
    if not has_torchvision() and root.is_dir() and (root / "text_processor").is_dir():
        # LongCat's prompt rewriter: its Qwen2-VL processor insists on a torchvision video processor
        from transformers import Qwen2VLProcessor

        kwargs["text_processor"] = image_only(Qwen2VLProcessor).from_pretrained(root / "text_processor")
    from sdg_data.io.hub import require_model

    require_model(spec.model_id, "--model-root (or model_paths in the recipe)", f"generator {spec.name}")
    pipe = cls.from_pretrained(spec.model_id, **kwargs)
    if cfg.lora:
        weights, _ = lora_file(cfg.lora)
        pipe.load_lora_weights(str(weights.parent), weight_name=weights.name, adapter_name="sdg_lora")
        pipe.set_adapters(["sdg_lora"], adapter_weights=[cfg.lora_scale])
    if cfg.cpu_offload and device.startswith("cuda"):
        pipe.enable_model_cpu_offload(device=device)
    elif device != "cpu":  # pipelines load on the CPU
        pipe.to(device)
    if cfg.vae_tiling and hasattr(pipe, "vae") and hasattr(pipe.vae, "enable_tiling"):
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    return pipe, dtype


def _revision(pipe: Any, spec: GeneratorSpec) -> str | None:
    if spec.revision:
        return spec.revision
    path = str(getattr(pipe.config, "_name_or_path", "") or "")
    parts = Path(path).parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts and parts[-1] != "snapshots" else None


def _load_checker(spec: str | None):
    if not spec:
        return None
    import importlib

    mod, _, fn = spec.partition(":")
    if not fn:
        raise ValueError(f"safety_checker must be 'module:function', got {spec!r}")
    return getattr(importlib.import_module(mod), fn)


class _Failure(Exception):
    pass


def _check_output(arr: Any, cfg: GenerateConfig) -> None:
    import numpy as np

    if not np.isfinite(arr).all():
        raise _Failure("output has NaN or Inf values")
    if float(arr.mean()) * 255.0 <= cfg.black_threshold:
        raise _Failure(f"output is all black (mean pixel <= {cfg.black_threshold})")


def _run_batch(pipe: Any, items: list[Item], cfg: GenerateConfig, device: str) -> list[Any]:
    """Images for ``items`` (same generator) in one call, each from its own seeded generator."""
    import torch

    st = _settings(items[0].spec, cfg)
    gen_device = "cpu" if device == "cpu" or cfg.cpu_offload else device
    kwargs: dict[str, Any] = {
        "prompt": [it.prompt.text for it in items],
        "height": st["height"],
        "width": st["width"],
        "num_inference_steps": st["steps"],
        "generator": [torch.Generator(gen_device).manual_seed(it.seed) for it in items],
        "output_type": "np",
        **st["call_kwargs"],
    }
    if st["guidance_scale"] is not None:
        kwargs["guidance_scale"] = st["guidance_scale"]
    with torch.inference_mode():
        out = pipe(**kwargs).images
    return list(out)


def _save_png(arr: Any, path: Path) -> tuple[Any, int, int]:
    import numpy as np
    from PIL import Image

    img = Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype("uint8"))
    with atomic_file(path, "wb") as f:  # a half-written PNG never has the final name
        img.save(f, format="PNG")
    return img, img.width, img.height


def _record(it: Item, width: int, height: int, prov: dict[str, Any]) -> dict[str, Any]:
    rec = ImageRecord(
        image_id=it.image_id,
        defects=[],
        annotated=False,  # "defects": null until a person has looked: never read as clean
        image_path=it.rel_path,
        width=width,
        height=height,
        caption=it.prompt.text,
        generator=it.spec.name,
        seed=it.seed,
        split=it.split,
        provenance=prov,
    )
    return rec.to_json()


# ------------------------------------------------------------------ the job
def _finished(out: Path) -> dict[str, dict[str, Any]]:
    """Every finished image: the merged manifest of earlier runs, and every rank's rows of a run not merged yet
    (a torn last line is cut: that image is redone)."""
    done: dict[str, dict[str, Any]] = {}
    if (out / "manifest.jsonl").is_file():
        done.update(read_finished(out / "manifest.jsonl"))
    for f in sorted(out.glob("manifest.rank*.jsonl")):
        done.update(read_finished(f))
    return done


_RANK_FILES = ("manifest.rank*.jsonl", "rejects.rank*.jsonl", "summary.rank*.json")


def _use_model_root(cfg: GenerateConfig) -> None:
    """Local copies under model_root (flux2, z-image, longcat, sana) stand in for the hub ids."""
    if cfg.model_root:
        from sdg_data.generate.registry import ALIASES

        root = Path(cfg.model_root)
        found = {name: str(root / alias) for alias, name in ALIASES.items() if (root / alias).is_dir()}
        cfg.model_paths = {**cfg.model_paths, **found}


def generate(prompts_source: str | Path, out_dir: str | Path, cfg: GenerateConfig) -> dict[str, Any]:
    """Run this rank's share of the plan; rank 0 merges and returns the summary (other ranks return theirs)."""

    t0 = time.perf_counter()
    from sdg_data.io.files import output_root

    out = output_root(out_dir)  # nothing below it is written, moved or deleted through a link
    _use_model_root(cfg)
    rank, world, state = _dist()
    prompts, prompt_rejects, n_rows = read_prompts(str(prompts_source))
    limited_out = 0
    if cfg.limit is not None:
        limited_out = max(0, len(prompts) - cfg.limit)
        prompts = prompts[: cfg.limit]
    items = plan(prompts, cfg)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    _barrier(state)
    sweep_stale_temps(out / "images")  # half-written PNGs of a killed run
    done = _finished(out)
    mine = [it for it in items if it.index % world == rank]
    todo = [it for it in mine if it.image_id not in done or not (out / it.rel_path).is_file()]
    manifest = AppendSink(out / f"manifest.rank{rank}.jsonl")
    rejects_f = AppendSink(out / f"rejects.rank{rank}.jsonl")
    checker = _load_checker(cfg.safety_checker)
    stats: dict[str, Any] = {"generated": 0, "skipped_existing": len(mine) - len(todo), "failed": 0, "retries": 0}
    timing: dict[str, float] = defaultdict(float)
    quiet = not cfg.progress or rank != 0
    bar = progress_bar(total=len(mine), initial=len(mine) - len(todo), desc=f"generate[{rank}]", unit="img",
                       enabled=not quiet)  # fmt: skip
    try:
        by_gen: dict[str, list[Item]] = defaultdict(list)
        for it in todo:
            by_gen[it.spec.name].append(it)
        if by_gen:
            versions = _versions()
        for group in by_gen.values():
            spec = group[0].spec
            device = _device(cfg, state)
            t_load = time.perf_counter()
            pipe, dtype = load_pipeline(spec, cfg, device)
            timing["load_s"] += time.perf_counter() - t_load
            base_prov = _base_provenance(spec, pipe, dtype, device, rank, versions)
            run = _Batches(pipe, cfg, device, base_prov, out, manifest, rejects_f, stats, checker, bar)
            for start in range(0, len(group), cfg.batch_size):
                run.generate(group[start : start + cfg.batch_size])
            del pipe
            _free(device)
    finally:
        manifest.close()
        rejects_f.close()
        bar.close()
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    stats["load_s"] = round(timing["load_s"], 3)
    write_json(out / f"summary.rank{rank}.json", {"rank": rank, "planned": len(mine), **stats})
    _barrier(state)
    if rank != 0:
        return {"rank": rank, **stats}
    return _merge(out, items, prompt_rejects, n_rows, limited_out, world, cfg)


def _base_provenance(spec: GeneratorSpec, pipe: Any, dtype: Any, device: str, rank: int, versions: dict) -> dict:
    """What every image of one pipeline records about how it was made."""
    return {
        "stage": "generate",
        "model_id": spec.model_id,
        "revision": _revision(pipe, spec),
        "pipeline": type(pipe).__name__,
        "dtype": str(dtype).removeprefix("torch."),
        "device": device,
        "rank": rank,
        "prompt_id": None,
        "versions": versions,
    }


@dataclass
class _Batches:
    """One loaded pipeline's batches: generate, check, retry the failed images, keep or reject each."""

    pipe: Any
    cfg: GenerateConfig
    device: str
    base_prov: dict
    out: Path
    manifest: AppendSink
    rejects_f: AppendSink
    stats: dict
    checker: Any
    bar: Any

    def generate(self, batch: list[Item]) -> None:
        cfg, stats = self.cfg, self.stats
        pending = [(it, 0) for it in batch]
        while pending:
            chunk = [it for it, _ in pending]
            tries = {it.image_id: n for it, n in pending}
            t1 = time.perf_counter()
            try:
                arrays = _run_batch(self.pipe, chunk, cfg, self.device)
                errors: list[str | None] = [None] * len(chunk)
            except Exception as exc:  # noqa: BLE001 - OOM and friends: one by one, then record
                _free(self.device)
                if len(chunk) > 1:  # a failed batch is nobody's fault: each image gets its own tries
                    for it in chunk:
                        _single(self.pipe, it, tries[it.image_id], cfg, self.device, self.base_prov, self.out,
                                self.manifest, self.rejects_f, stats, self.checker, self.bar)  # fmt: skip
                    return
                arrays, errors = [None], [f"{type(exc).__name__}: {str(exc)[:300]}"]
            seconds = (time.perf_counter() - t1) / len(chunk)
            retry: list[tuple[Item, int]] = []
            for it, arr, err in zip(chunk, arrays, errors):
                err = err or _verdict(arr, it, cfg, self.checker)
                if err is None:
                    _keep(it, arr, seconds, cfg, self.base_prov, self.out, self.manifest)
                    stats["generated"] += 1
                    self.bar.update()
                elif tries[it.image_id] < cfg.max_retries and not err.startswith("safety"):
                    stats["retries"] += 1
                    retry.append((it, tries[it.image_id] + 1))
                else:
                    _reject(it, err, tries[it.image_id] + 1, self.rejects_f)
                    stats["failed"] += 1
                    self.bar.update()
            pending = retry


def _verdict(arr: Any, it: Item, cfg: GenerateConfig, checker: Any) -> str | None:
    try:
        _check_output(arr, cfg)
    except _Failure as exc:
        return str(exc)
    if checker is not None:
        import numpy as np
        from PIL import Image

        ok, why = checker(Image.fromarray((np.clip(arr, 0, 1) * 255).astype("uint8")), it.prompt.text)
        if not ok:
            return f"safety: {why}"
    return None


def _single(pipe, it, tries, cfg, device, base_prov, out, manifest, rejects_f, stats, checker, bar) -> None:
    """One image on its own (after a batch failed), with its own retry budget."""
    while True:
        t1 = time.perf_counter()
        try:
            arr = _run_batch(pipe, [it], cfg, device)[0]
            err = _verdict(arr, it, cfg, checker)
        except Exception as exc:  # noqa: BLE001
            arr, err = None, f"{type(exc).__name__}: {str(exc)[:300]}"
            _free(device)
        if err is None:
            _keep(it, arr, time.perf_counter() - t1, cfg, base_prov, out, manifest)
            stats["generated"] += 1
            bar.update()
            return
        if tries >= cfg.max_retries or err.startswith("safety"):
            _reject(it, err, tries + 1, rejects_f)
            stats["failed"] += 1
            bar.update()
            return
        tries += 1
        stats["retries"] += 1


def _keep(it: Item, arr: Any, seconds: float, cfg: GenerateConfig, base_prov, out: Path, manifest) -> None:
    _, w, h = _save_png(arr, out / it.rel_path)
    st = _settings(it.spec, cfg)
    prov = {
        **base_prov,
        "prompt_id": it.prompt.prompt_id,
        "seed": it.seed,
        "steps": st["steps"],
        "guidance_scale": st["guidance_scale"],
        "call_kwargs": st["call_kwargs"],
        "lora": {"path": cfg.lora, **st["lora"]} if cfg.lora else None,
        "resolution": [st["width"], st["height"]],
        "seconds": round(seconds, 4),
    }
    manifest.write(_record(it, w, h, prov))


def _reject(it: Item, reason: str, attempts: int, f) -> None:
    """A failed image in its rank's rejects file, already in the one reject schema (the plan item as evidence)."""
    item = {"generator": it.spec.name, "prompt": it.prompt.text, "seed": it.seed, "attempts": attempts}
    f.write(Reject(reason, "generate", it.image_id, f"{it.spec.name} seed {it.seed}", None, item).to_json())


def _free(device: str) -> None:
    """Give accelerator memory back between generators and after an OOM (a full gc costs ~0.2 s, so not on CPU)."""
    if device.startswith("cuda"):
        import gc

        import torch

        gc.collect()
        torch.cuda.empty_cache()


def _merge(
    out: Path,
    items: list[Item],
    prompt_rejects,
    n_rows: int,
    limited_out: int,
    world: int,
    cfg: GenerateConfig,
) -> dict[str, Any]:
    """One manifest in plan order, one rejects file, one summary; the counts must reconcile."""
    done = _finished(out)
    failed: dict[str, dict[str, Any]] = {}
    for f in sorted(out.glob("rejects.rank*.jsonl")):
        for obj in iter_json_lines(f)[0]:  # a regular file only; a malformed line is no failure of ours
            if isinstance(obj.get("image_id"), str):
                failed[obj["image_id"]] = obj
    rows, fails, missing = [], [], []
    for it in items:
        if it.image_id in done and (out / it.rel_path).is_file():
            rows.append(done[it.image_id])
        elif it.image_id in failed:
            fails.append(failed[it.image_id])
        else:
            missing.append(it.image_id)
    per_gen: dict[str, int] = defaultdict(int)
    per_split: dict[str, int] = defaultdict(int)
    for r in rows:
        per_gen[r["generator"]] += 1
        per_split[r["split"]] += 1
    rank_summaries = [s for p in sorted(out.glob("summary.rank*.json")) if (s := read_json_object(p)) is not None]
    # the units of work: every planned image, and every prompt row that planned none (rejected)
    report = StageReport("generate", read=len(items) + len(prompt_rejects), kept=len(rows), left_out=len(missing))
    report.add(prompt_rejects)
    report.add([Reject(**{k: f.get(k) for k in REJECT_KEYS}) for f in fails])  # as the ranks wrote them
    report.extras = {
        "prompt_rows": n_rows,
        "prompts_rejected": len(prompt_rejects),
        "prompts_repeated": sum("repeats an earlier prompt" in r.reason for r in prompt_rejects),
        "prompts_left_out_by_limit": limited_out,
        "prompts_used": n_rows - len(prompt_rejects) - limited_out,
        "planned_images": len(items),
        "images": len(rows),
        "failed": len(fails),
        "missing": len(missing),
        "by_generator": dict(per_gen),
        "by_split": dict(per_split),
        "world_size": world,
        "ranks": rank_summaries,
        "config": {k: v for k, v in asdict(cfg).items() if k != "progress"},
    }
    report.extras["skipped_existing"] = sum(r.get("skipped_existing", 0) for r in rank_summaries)
    if not report.failed:  # a run that made nothing leaves an earlier manifest as it was
        write_jsonl(out / "manifest.jsonl", rows)
    summary = report.write(out)
    if not report.failed:  # merged: the ranks' own files have said all they had (a rerun reads manifest.jsonl)
        from sdg_data.io.files import remove_output

        for pattern in _RANK_FILES:
            for f in out.glob(pattern):
                remove_output(f)
    return summary
