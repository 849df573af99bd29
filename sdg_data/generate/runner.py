"""``sdg generate``: prompts -> PNGs and a manifest of core records, resumable and sharded over ranks.

Work is planned deterministically (every rank plans the same list), then each generator's items are split by rank
(item i goes to rank i mod world), so no two ranks write the same image. Each rank appends to its own
``manifest.rank<k>.jsonl`` after the PNG is in place (written to a temporary name, then renamed), so a killed run
leaves either a finished image or nothing. On rerun, finished images are skipped. When every rank is done, rank 0
merges the rank files into ``manifest.jsonl`` (plan order) and ``generate_rejects.jsonl``, and writes
``generate_summary.json``, whose counts reconcile.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from sdg_data.generate.prompts import Prompt, decide_split, read_prompts
from sdg_data.generate.registry import GeneratorSpec, resolve, slug
from sdg_data.jsonl import iter_jsonl, write_json, write_jsonl
from sdg_data.records import ImageRecord


log = logging.getLogger(__name__)
SDG30K_GENERATORS = ["FLUX.2-dev", "Z-Image-Turbo", "LongCat-Image", "SANA-1.5-1.6B"]


@dataclass
class GenerateConfig:
    generators: list[str] = field(default_factory=lambda: list(SDG30K_GENERATORS))
    model_paths: dict[str, str] = field(default_factory=dict)  # registry name -> local copy of its checkpoint
    assign: Literal["spread", "all"] = "spread"  # spread: each prompt to one generator, evenly; all: to every one
    seeds: int = 1  # images per (prompt, generator), seeds base_seed .. base_seed + seeds - 1
    base_seed: int = 0
    height: int = 1024
    width: int = 1024
    steps: int | None = None  # None: the generator's recommended value
    guidance_scale: float | None = None
    call_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)  # per generator name, extra call args
    dtype: str | None = None  # None: the generator's (bf16 for the four); float32 on CPU
    device: str = "auto"
    cpu_offload: bool = False  # enable_model_cpu_offload: one component on the GPU at a time
    vae_tiling: bool = False
    batch_size: int = 1  # prompts per pipeline call
    test_fraction: float = 1151 / 30096  # share of prompts held out, when the input does not fix a split
    split_salt: str = "sdg"
    max_retries: int = 2  # per image, after an error, a NaN or an all-black output
    black_threshold: float = 2.0  # mean pixel value (0-255) at or below which an image counts as all black
    safety_checker: str | None = None  # "module:function" taking (PIL image, prompt) -> (ok, reason)
    limit: int | None = None  # only the first N prompts
    progress: bool = True

    def __post_init__(self) -> None:
        if self.seeds < 1 or self.batch_size < 1 or self.max_retries < 0:
            raise ValueError("GenerateConfig: seeds and batch_size must be >= 1, max_retries >= 0")
        if self.height % 16 or self.width % 16:
            raise ValueError(
                f"GenerateConfig: height and width must be multiples of 16, got {self.height}x{self.width}"
            )
        if not 0 <= self.test_fraction < 1:
            raise ValueError(f"GenerateConfig.test_fraction must be in [0, 1), got {self.test_fraction}")
        if not self.generators:
            raise ValueError("GenerateConfig.generators is empty")


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
    return {
        "height": cfg.height,
        "width": cfg.width,
        "steps": cfg.steps or spec.steps,
        "guidance_scale": cfg.guidance_scale if cfg.guidance_scale is not None else spec.guidance_scale,
        "call_kwargs": kwargs,
    }


def plan(prompts: list[Prompt], cfg: GenerateConfig) -> list[Item]:
    """Every (prompt, generator, seed) to make, in a fixed order that every rank computes alike."""
    specs = [resolve(g, cfg.model_paths) for g in cfg.generators]
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

    from sdg_data.vision_compat import has_torchvision, image_only

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
    pipe = cls.from_pretrained(spec.model_id, **kwargs)
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)  # a half-written PNG never has the final name
    return img, img.width, img.height


def _record(it: Item, width: int, height: int, prov: dict[str, Any]) -> dict[str, Any]:
    rec = ImageRecord(
        image_id=it.image_id,
        defects=[],
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


def _sweep_stale_temps(out: Path) -> int:
    """Remove half-written PNGs (``.NAME.PID.tmp``) left by a killed run: only those whose process is gone, so a
    rank still writing is never disturbed."""
    removed = 0
    for tmp in out.glob("images/**/.*.tmp"):
        try:
            pid = int(tmp.name.rsplit(".", 2)[-2])
            os.kill(pid, 0)
            continue  # that process still runs
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


# ------------------------------------------------------------------ the job
def _finished(out: Path) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    for f in sorted(out.glob("manifest.rank*.jsonl")):
        raw = f.read_bytes()
        if raw and not raw.endswith(b"\n"):  # torn last line: that image is redone
            f.write_bytes(raw[: raw.rfind(b"\n") + 1])
        for _, obj in iter_jsonl(f):
            done[obj["image_id"]] = obj
    return done


def generate(prompts_source: str | Path, out_dir: str | Path, cfg: GenerateConfig) -> dict[str, Any]:
    """Run this rank's share of the plan; rank 0 merges and returns the summary (other ranks return theirs)."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    out = Path(out_dir)
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
    _sweep_stale_temps(out)
    done = _finished(out)
    mine = [it for it in items if it.index % world == rank]
    todo = [it for it in mine if it.image_id not in done or not (out / it.rel_path).is_file()]
    manifest = open(out / f"manifest.rank{rank}.jsonl", "a", encoding="utf-8")  # noqa: SIM115
    rejects_f = open(out / f"rejects.rank{rank}.jsonl", "a", encoding="utf-8")  # noqa: SIM115
    checker = _load_checker(cfg.safety_checker)
    stats: dict[str, Any] = {"generated": 0, "skipped_existing": len(mine) - len(todo), "failed": 0, "retries": 0}
    timing: dict[str, float] = defaultdict(float)
    bar = tqdm(
        total=len(mine),
        initial=len(mine) - len(todo),
        desc=f"generate[{rank}]",
        unit="img",
        disable=not cfg.progress or rank != 0,
    )
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
            base_prov = {
                "stage": "generate",
                "annotated": False,
                "model_id": spec.model_id,
                "revision": _revision(pipe, spec),
                "pipeline": type(pipe).__name__,
                "dtype": str(dtype).removeprefix("torch."),
                "device": device,
                "rank": rank,
                "prompt_id": None,
                "versions": versions,
            }
            for start in range(0, len(group), cfg.batch_size):
                batch = group[start : start + cfg.batch_size]
                pending = [(it, 0) for it in batch]
                while pending:
                    chunk = [it for it, _ in pending]
                    tries = {it.image_id: n for it, n in pending}
                    t1 = time.perf_counter()
                    try:
                        arrays = _run_batch(pipe, chunk, cfg, device)
                        errors: list[str | None] = [None] * len(chunk)
                    except Exception as exc:  # noqa: BLE001 - OOM and friends: one by one, then record
                        _free(device)
                        if len(chunk) > 1:  # a failed batch is nobody's fault: each image gets its own tries
                            for it in chunk:
                                _single(
                                    pipe,
                                    it,
                                    tries[it.image_id],
                                    cfg,
                                    device,
                                    base_prov,
                                    out,
                                    manifest,
                                    rejects_f,
                                    stats,
                                    checker,
                                    bar,
                                )
                            break
                        arrays, errors = [None], [f"{type(exc).__name__}: {str(exc)[:300]}"]
                    seconds = (time.perf_counter() - t1) / len(chunk)
                    retry: list[tuple[Item, int]] = []
                    for it, arr, err in zip(chunk, arrays, errors):
                        err = err or _verdict(arr, it, cfg, checker)
                        if err is None:
                            _keep(it, arr, seconds, cfg, base_prov, out, manifest)
                            stats["generated"] += 1
                            bar.update()
                        elif tries[it.image_id] < cfg.max_retries and not err.startswith("safety"):
                            stats["retries"] += 1
                            retry.append((it, tries[it.image_id] + 1))
                        else:
                            _reject(it, err, tries[it.image_id] + 1, rejects_f)
                            stats["failed"] += 1
                            bar.update()
                    pending = retry
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
    return _merge(out, items, prompt_rejects, n_rows, limited_out, world, cfg, stats)


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
        "resolution": [st["width"], st["height"]],
        "seconds": round(seconds, 4),
    }
    manifest.write(json.dumps(_record(it, w, h, prov), ensure_ascii=False) + "\n")
    manifest.flush()
    os.fsync(manifest.fileno())


def _reject(it: Item, reason: str, attempts: int, f) -> None:
    row = {
        "image_id": it.image_id,
        "generator": it.spec.name,
        "prompt": it.prompt.text,
        "seed": it.seed,
        "stage": "generate",
        "attempts": attempts,
        "reason": reason,
    }
    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    f.flush()


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
    stats0: dict,
) -> dict[str, Any]:
    """One manifest in plan order, one rejects file, one summary; the counts must reconcile."""
    done = _finished(out)
    failed: dict[str, dict[str, Any]] = {}
    for f in sorted(out.glob("rejects.rank*.jsonl")):
        for _, obj in iter_jsonl(f):
            failed[obj["image_id"]] = obj
    rows, fails, missing = [], [], []
    for it in items:
        if it.image_id in done and (out / it.rel_path).is_file():
            rows.append(done[it.image_id])
        elif it.image_id in failed:
            fails.append(failed[it.image_id])
        else:
            missing.append(it.image_id)
    write_jsonl(out / "manifest.jsonl", rows)
    write_jsonl(out / "generate_rejects.jsonl", [{"stage": "prompt", **r} for r in prompt_rejects] + fails)
    per_gen: dict[str, int] = defaultdict(int)
    per_split: dict[str, int] = defaultdict(int)
    for r in rows:
        per_gen[r["generator"]] += 1
        per_split[r["split"]] += 1
    rank_summaries = [json.loads(p.read_text()) for p in sorted(out.glob("summary.rank*.json"))]
    summary = {
        "prompt_rows": n_rows,
        "prompts_rejected": len(prompt_rejects),
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
    if summary["planned_images"] != summary["images"] + summary["failed"] + summary["missing"]:
        raise AssertionError(f"counts do not reconcile: {summary}")
    write_json(out / "generate_summary.json", summary)
    return summary
