"""BoxFlow-GRPO: align a flow-matching text-to-image model (FLUX.1-dev) with the SDG detector's boxes.

    sdg train boxflow --config flux1_dev_sdg --prompts pickapic.jsonl \\
        --detector-url http://HOST:17142/v1 --judge-url http://HOST:17141/v1 --output_dir runs/boxflow
    accelerate launch --config_file train/launch/ddp_1x8.yaml train/boxflow/trainer.py --config ...

Each round: every process draws the same prompts (``prompts_per_step`` of them, ``group_size`` images each, global
sample i on process i mod world), samples with the current LoRA (SDE in a window of ``num_sde_steps`` steps, ODE
elsewhere), and sends each batch's images to the reward servers while it samples the next. Rewards and penalty maps
are gathered, every process computes the same advantages (train/boxflow/advantages.py), and the LoRA takes
``updates_per_step`` clipped-policy steps over the SDE window. An EMA of the LoRA is what gets saved.

Checkpoints (``checkpoint-N``: the EMA LoRA, which ``FluxPipeline.load_lora_weights`` and ``sdg generate --lora``
load, plus ``training_state.pt`` with the raw LoRA, EMA, optimiser, step and RNG) let a killed run resume where it
stopped: prompts, noise and windows are functions of (seed, round), so the resumed run is the run that would have
been.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from train.boxflow.advantages import BoxArithmetic, advantages, clipped_loss, penalty_maps  # noqa: E402
from train.boxflow.config import BoxFlowConfig, BoxFlowRewardConfig  # noqa: E402
from train.boxflow.flow_models import Cond, FlowAdapter, Trajectory, load_pipeline, make_adapter, sample  # noqa: E402
from train.boxflow.sde import sde_step  # noqa: E402


log = logging.getLogger("sdg.train.boxflow")
STATE_FILE = "training_state.pt"
LORA_FILE = "pytorch_lora_weights.safetensors"


# ------------------------------------------------------------------ the plan of a round
def _hash_int(*parts: Any) -> int:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:15], 16)


@dataclass
class Round:
    """What every process agrees on for one sampling round."""

    index: int
    prompt_ids: list[int]  # per group
    window: list[int]  # the SDE steps
    mine: list[int]  # the global sample indices this process samples (sample i is in group i // group_size)


def plan_round(cfg: BoxFlowConfig, n_prompts: int, index: int, rank: int, world: int) -> Round:
    """Prompts walk through a fresh permutation every epoch; sample i goes to process i mod world, so a group is
    spread over processes; the SDE window is drawn from ``sde_steps``. All functions of (seed, round)."""
    ids = []
    for k in range(cfg.prompts_per_step):
        pos = index * cfg.prompts_per_step + k
        epoch, j = divmod(pos, n_prompts)
        order = list(range(n_prompts))
        random.Random(_hash_int(cfg.seed, "epoch", epoch)).shuffle(order)
        ids.append(order[j])
    window = sorted(random.Random(_hash_int(cfg.seed, "window", index)).sample(cfg.sde_steps, cfg.num_sde_steps))
    total = cfg.prompts_per_step * cfg.group_size
    return Round(index, ids, window, list(range(rank, total, world)))


def check_batch(cfg: BoxFlowConfig, world: int) -> dict[str, int]:
    """The round's sizes for this world, checked to divide evenly."""
    total = cfg.prompts_per_step * cfg.group_size
    if total % world:
        raise ValueError(f"prompts_per_step x group_size = {total} images do not divide over {world} processes")
    local = total // world
    chunk = cfg.per_device_batch_size * cfg.updates_per_step
    if local % chunk:
        raise ValueError(
            f"{local} images per process do not split into {cfg.updates_per_step} updates of whole batches of "
            f"{cfg.per_device_batch_size} (per_device_batch_size x updates_per_step = {chunk} must divide {local})"
        )
    return {"images_per_round": total, "images_per_process": local, "batches_per_update": local // chunk}


# ------------------------------------------------------------------ EMA and state
class EMA:
    """Exponential moving average of the trainable (LoRA) parameters, swapped in to save."""

    def __init__(self, params: dict[str, torch.nn.Parameter], decay: float):
        self.decay = decay
        self.shadow = {k: p.detach().clone() for k, p in params.items()}

    @torch.no_grad()
    def update(self, params: dict[str, torch.nn.Parameter]) -> None:
        for k, p in params.items():
            self.shadow[k].mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)

    @torch.no_grad()
    def swap(self, params: dict[str, torch.nn.Parameter]) -> None:
        for k, p in params.items():
            tmp = p.detach().clone()
            p.copy_(self.shadow[k])
            self.shadow[k] = tmp


def newest_checkpoint(out: Path) -> Path | None:
    found = [p for p in out.glob("checkpoint-*") if (p / STATE_FILE).is_file() and p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1]), default=None)


# ------------------------------------------------------------------ the trainer
@dataclass
class Trainer:
    cfg: BoxFlowConfig
    rcfg: BoxFlowRewardConfig
    prompts: list[str]
    accelerator: Any
    adapter: FlowAdapter
    model: Any  # the prepared (possibly DDP-wrapped) transformer
    optimizer: Any
    params: dict[str, torch.nn.Parameter]
    rewards: Any
    ema: EMA | None = None
    step: int = 0  # optimiser steps done
    round: int = 0  # sampling rounds done
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def out(self) -> Path:
        from sdg_data.io.files import output_root

        return output_root(self.cfg.output_dir)

    @property
    def raw(self) -> Any:
        return self.accelerator.unwrap_model(self.model)

    # -------------------------------------------------------------- sampling
    def _generators(self, rnd: Round, indices: list[int]) -> list[torch.Generator]:
        dev = "cpu" if self.adapter.device.type == "cpu" else self.adapter.device
        return [torch.Generator(dev).manual_seed(_hash_int(self.cfg.seed, rnd.index, i)) for i in indices]

    def sample_round(self, rnd: Round) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """Sample this process's share in batches; each batch's rewards are requested as soon as it is decoded
        and come back while the next batch samples."""
        cfg = self.cfg
        batches: list[dict[str, Any]] = []
        pending = []
        t0 = time.perf_counter()
        self.raw.eval()
        for start in range(0, len(rnd.mine), cfg.per_device_batch_size):
            idx = rnd.mine[start : start + cfg.per_device_batch_size]
            texts = [self.prompts[rnd.prompt_ids[i // cfg.group_size]] for i in idx]
            cond = self.adapter.encode(texts)
            with self.accelerator.autocast():
                traj = sample(self.adapter, self.raw, cond, self._generators(rnd, idx), cfg.steps, cfg.noise_level,
                              rnd.window)  # fmt: skip
            images = self.adapter.decode(traj.final)
            ids = [f"r{rnd.index}-s{i}" for i in idx]
            pending.append(self.rewards.submit(images, texts, ids))
            batches.append({"indices": idx, "cond": cond, "traj": traj, "images": images})
        t_sampled = time.perf_counter()
        results = [f.result() for f in pending]
        t_done = time.perf_counter()
        for b, r in zip(batches, results):
            b["reward"] = r
        for kind in ("detector", "judge"):  # counted in the metrics; the first reason of each kind is logged here
            why = [w for r in results for w in getattr(r, f"{kind}_failed") if w]
            if why:
                effect = "no penalty for those images" if kind == "detector" else "those images sit out their group"
                log.warning("round %d: %d %s failure(s), %s; first: %s", rnd.index, len(why), kind, effect, why[0])
        in_flight = sum(r.latency_s for r in results)
        waited = t_done - t_sampled
        timing = {
            "sample_s": t_sampled - t0,
            "reward_wait_s": waited,
            "reward_latency_s": in_flight,
            # the share of the batches' reward time that sampling hid (the last batch's can never be hidden)
            "reward_hidden": 1.0 - min(1.0, waited / in_flight) if in_flight > 0 else 1.0,
        }
        return batches, timing

    # -------------------------------------------------------------- advantages
    def gather_rewards(self, rnd: Round, batches: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Every process's rewards and penalty maps, gathered and put in global sample order."""
        rows, cols = self.adapter.token_grid()
        local = []
        for b in batches:
            r = b["reward"]
            keep_thin = self.cfg.thin_boxes == "keep"
            w_art, w_mis = penalty_maps(r.defects, rows, cols, self.rcfg.missing_importance, keep_thin)
            for k, i in enumerate(b["indices"]):
                arts = sum(d.label == "artifact" for d in r.defects[k])
                head = [i, r.scores[k], r.detector_failed[k] is not None, r.judge_failed[k] is not None, arts,
                        len(r.defects[k]) - arts]  # fmt: skip
                local.append(torch.cat([torch.tensor(head, dtype=torch.float32), w_art[k], w_mis[k]]))
        mine = torch.stack(local).to(self.accelerator.device)
        every = self.accelerator.gather(mine).cpu()
        every = every[torch.argsort(every[:, 0])]
        length = rows * cols
        return {
            "index": every[:, 0].long(),
            "R": every[:, 1],
            "detector_failed": every[:, 2],
            "judge_failed": every[:, 3],
            "n_art": every[:, 4],
            "n_mis": every[:, 5],
            "w_art": every[:, 6 : 6 + length],
            "w_mis": every[:, 6 + length :],
        }

    def compute_advantages(self, g: dict[str, torch.Tensor]):
        groups = g["index"] // self.cfg.group_size
        c = self.cfg
        box = BoxArithmetic(
            unbiased_std=c.dense_std == "unbiased",
            sigma_min=c.dense_sigma_min,
            eps=c.dense_eps,
            clip=c.dense_clip,
            keep_thin=c.thin_boxes == "keep",
            min_penalty=c.dense_min_penalty,
        )
        return advantages(c.mode, g["R"], groups, g["w_art"], g["w_mis"], c.c_art, c.c_mis, c.adv_eps, c.adv_clip, box)  # type: ignore[arg-type]

    # -------------------------------------------------------------- training
    def _loss(self, traj: Trajectory, j: int, cond: Cond, adv: torch.Tensor, mask) -> tuple[torch.Tensor, Any]:
        cfg = self.cfg
        i = traj.steps[j]
        sig = traj.sigmas
        with self.accelerator.autocast():
            v = self.adapter.velocity(self.model, traj.before[j], sig[i], cond)
        step = sde_step(v, traj.before[j], sig[i], sig[i + 1], cfg.noise_level, prev_sample=traj.after[j],
                        sigma_first_next=sig[1])  # fmt: skip
        level = "token" if cfg.mode == "box" else "image"
        parts = clipped_loss(step.log_prob, traj.log_probs[j], adv, cfg.clip_range, level, mask)  # type: ignore[arg-type]
        loss = parts.loss
        if cfg.kl_beta > 0:
            with torch.no_grad(), self.accelerator.autocast():
                self.raw.disable_adapters()
                try:
                    v_ref = self.adapter.velocity(self.raw, traj.before[j], sig[i], cond)
                finally:
                    self.raw.enable_adapters()
            ref = sde_step(v_ref, traj.before[j], sig[i], sig[i + 1], cfg.noise_level, prev_sample=traj.after[j],
                           sigma_first_next=sig[1])  # fmt: skip
            kl = ((step.mean - ref.mean) ** 2).mean(dim=(1, 2)) / (2 * step.noise_scale**2)
            loss = loss + cfg.kl_beta * kl.mean()
        return loss, parts

    def train_round(self, batches: list[dict[str, Any]], adv, index: torch.Tensor) -> dict[str, float]:
        """``updates_per_step`` optimiser steps over this process's batches, in sampling order (the same batches
        as sampled: kernels that depend on the batch would move the log-probs)."""
        cfg = self.cfg
        self.raw.train()
        per_update = len(batches) // cfg.updates_per_step
        pos = {int(i): k for k, i in enumerate(index)}
        stats: dict[str, list[float]] = {"loss": [], "clip_fraction": [], "approx_kl": [], "ratio": []}
        grad_norms = []
        for u in range(cfg.updates_per_step):
            chunk = batches[u * per_update : (u + 1) * per_update]
            passes = len(chunk) * len(chunk[0]["traj"].steps)
            n = 0
            for b in chunk:
                rows = [pos[i] for i in b["indices"]]
                a = adv.values[rows].to(self.adapter.device)
                mask = adv.mask[rows].to(self.adapter.device) if adv.mask is not None else None
                for j in range(len(b["traj"].steps)):
                    n += 1
                    sync = nullcontext() if n == passes else self.accelerator.no_sync(self.model)
                    with sync:
                        loss, parts = self._loss(b["traj"], j, b["cond"], a, mask)
                        self.accelerator.backward(loss / passes)
                    stats["loss"].append(float(loss.detach()))
                    stats["clip_fraction"].append(parts.clip_fraction)
                    stats["approx_kl"].append(parts.approx_kl)
                    stats["ratio"].append(parts.ratio_mean)
            norm = self.accelerator.clip_grad_norm_(list(self.params.values()), cfg.max_grad_norm)
            grad_norms.append(float(norm))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            if self.ema is not None and self.step % cfg.ema_every == 0:
                self.ema.update(self.params)
            if self.step >= cfg.max_steps:
                break
        out = {k: sum(v) / len(v) for k, v in stats.items() if v}
        out["grad_norm"] = sum(grad_norms) / len(grad_norms)
        return out

    # -------------------------------------------------------------- one round, logged
    def run_round(self) -> dict[str, Any]:
        rnd = plan_round(self.cfg, len(self.prompts), self.round, self.accelerator.process_index,
                         self.accelerator.num_processes)  # fmt: skip
        batches, timing = self.sample_round(rnd)
        g = self.gather_rewards(rnd, batches)
        adv = self.compute_advantages(g)
        self._rank_log(rnd, g["index"], adv.values)
        t0 = time.perf_counter()
        train = self.train_round(batches, adv, g["index"])
        timing["train_s"] = time.perf_counter() - t0
        self.round += 1
        return self._metrics(rnd, g, adv, train, timing)

    def _rank_log(self, rnd: Round, index: torch.Tensor, values: torch.Tensor) -> None:
        """Each process's own line per round (``ranks/rank<k>.jsonl``): the samples it drew and a digest of the
        advantages it computed, which must be the same on every process."""
        folder = self.out / "ranks"
        folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(values.contiguous().numpy().tobytes()).hexdigest()[:16]
        row = {
            "round": rnd.index,
            "samples": rnd.mine,
            "groups": sorted({i // self.cfg.group_size for i in rnd.mine}),
            "gathered": index.tolist(),
            "advantages_sha256": digest,
            "advantage_rows": {i: values[k].mean().item() for k, i in enumerate(index.tolist()) if i in rnd.mine},
        }
        with open(folder / f"rank{self.accelerator.process_index}.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def _metrics(self, rnd: Round, g, adv, train: dict[str, float], timing: dict[str, float]) -> dict[str, Any]:
        r = g["R"][~torch.isnan(g["R"])]
        base = float(r.abs().mean()) if len(r) else 0.0
        share = float(adv.penalty.mean()) / base if base > 0 else 0.0
        return {
            "step": self.step,
            "round": rnd.index,
            "sde_window": rnd.window,
            "reward_mean": float(r.mean()) if len(r) else math.nan,
            "reward_std": float(r.std(unbiased=False)) if len(r) else math.nan,
            "penalty_share": share,  # mean penalty over mean |R|: how much of the reward the boxes take
            "artifacts_per_image": float(g["n_art"].mean()),
            "misalignments_per_image": float(g["n_mis"].mean()),
            "clean_images": float(((g["n_art"] + g["n_mis"]) == 0).float().mean()),
            "detector_failures": int(g["detector_failed"].sum()),
            "judge_failures": int(g["judge_failed"].sum()),
            "advantage_abs_mean": float(adv.values.abs().mean()),
            **train,
            **{k: round(v, 4) for k, v in timing.items()},
            "lr": self.optimizer.param_groups[0]["lr"],
        }

    # -------------------------------------------------------------- saving and resuming
    def save(self, final: bool = False) -> Path:
        """A checkpoint (or the final LoRA in output_dir): the EMA weights as a diffusers LoRA, and the state."""
        from peft.utils import get_peft_model_state_dict

        folder = self.out if final else self.out / f"checkpoint-{self.step}"
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            tmp = folder.with_name(folder.name + ".tmp") if not final else folder
            tmp.mkdir(parents=True, exist_ok=True)
            if self.ema is not None:
                self.ema.swap(self.params)
            try:
                lora = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(self.raw).items()}
                self.adapter.save_lora(str(tmp), lora)
            finally:
                if self.ema is not None:
                    self.ema.swap(self.params)
            if not final:
                torch.save(self._state(), tmp / STATE_FILE)
                (tmp / "boxflow_config.json").write_text(json.dumps(self._config_dict(), indent=2))
                if folder.exists():
                    shutil.rmtree(folder)
                tmp.rename(folder)  # a checkpoint is whole or absent
                self._prune()
        self.accelerator.wait_for_everyone()
        return folder

    def _config_dict(self) -> dict[str, Any]:
        return {"train": asdict(self.cfg), "reward": asdict(self.rcfg)}

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "round": self.round,
            "params": {k: p.detach().cpu().clone() for k, p in self.params.items()},
            "ema": {k: v.cpu() for k, v in self.ema.shadow.items()} if self.ema else None,
            "optimizer": self.optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
            "history": self.history,
        }

    def load(self, folder: Path) -> None:
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=False)  # our own file
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(state["params"][k])
        if self.ema is not None and state["ema"] is not None:
            self.ema.shadow = {k: v.to(self.params[k].device) for k, v in state["ema"].items()}
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        self.step, self.round, self.history = state["step"], state["round"], state["history"]

    def _prune(self) -> None:
        limit = self.cfg.save_total_limit
        if not limit:
            return
        found = sorted(self.out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        for old in found[:-limit]:
            shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------ setup
def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    if name not in table:
        raise ValueError(f"dtype must be auto or one of {sorted(table)}, got {name!r}")
    return table[name]


def read_prompt_texts(source: str) -> list[str]:
    from sdg_data.generate.prompts import read_prompts

    if not source:
        raise ValueError("--prompts is required: a JSONL/CSV/Parquet/TXT file of training prompts")
    prompts, rejects, n = read_prompts(source)
    for r in rejects:
        log.warning("prompts: %s left out: %s", r.where, r.reason)
    if not prompts:
        raise ValueError(f"{source}: no usable prompts ({n} rows read, {len(rejects)} rejected)")
    return [p.text for p in prompts]


def build_trainer(cfg: BoxFlowConfig, rcfg: BoxFlowRewardConfig) -> Trainer:
    from accelerate import Accelerator
    from peft import LoraConfig

    from train.boxflow.rewards import RewardService

    cuda = torch.cuda.is_available()
    probe = torch.device("cuda" if cuda else "cpu")
    dtype = _dtype(cfg.dtype, probe)
    mixed = "bf16" if dtype == torch.bfloat16 and cuda else "no"
    accelerator = Accelerator(mixed_precision=mixed, cpu=not cuda)
    info = check_batch(cfg, accelerator.num_processes)
    prompts = read_prompt_texts(cfg.prompts)
    if not rcfg.judge_url and not rcfg.python_reward:
        raise ValueError("no scalar reward: give --judge-url (a UnifiedReward server) or --python_reward module:fn")
    if cfg.mode != "scalar" and not rcfg.detector_url and not rcfg.python_reward:
        raise ValueError(f"mode {cfg.mode} needs boxes: give --detector-url (an SDG detector server)")
    pipe = load_pipeline(cfg.model, dtype, accelerator.device, cfg.revision)
    adapter = make_adapter(pipe, cfg.resolution, cfg.resolution, cfg.guidance_scale, accelerator.device,
                           max_sequence_length=cfg.max_sequence_length)  # fmt: skip
    transformer = pipe.transformer
    transformer.add_adapter(
        LoraConfig(
            r=cfg.lora_rank,
            lora_alpha=cfg.lora_alpha,
            init_lora_weights="gaussian",
            target_modules=cfg.lora_targets,
        )
    )
    for p in transformer.parameters():  # the LoRA trains in float32 over a bf16 base
        if p.requires_grad:
            p.data = p.data.float()
    if cfg.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    params = {k: p for k, p in transformer.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError(f"the LoRA targets {cfg.lora_targets} match no module of {type(transformer).__name__}")
    optimizer = torch.optim.AdamW(
        list(params.values()),
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        weight_decay=cfg.weight_decay,
        eps=cfg.adam_epsilon,
    )
    model, optimizer = accelerator.prepare(transformer, optimizer)
    log.info(
        "BoxFlow-GRPO (%s mode): %d processes, %s; LoRA %d tensors, %.2fM weights; token grid %s",
        cfg.mode,
        accelerator.num_processes,
        json.dumps(info),
        len(params),
        sum(p.numel() for p in params.values()) / 1e6,
        adapter.token_grid(),
    )
    ema = EMA(params, cfg.ema_decay) if cfg.ema_decay > 0 else None
    return Trainer(cfg, rcfg, prompts, accelerator, adapter, model, optimizer, params, RewardService(rcfg), ema)


def train(cfg: BoxFlowConfig, rcfg: BoxFlowRewardConfig) -> dict[str, Any]:
    """Run (or resume) the training; return the summary written to output_dir/summary.json."""
    from sdg_data.io.progress import progress_bar

    trainer = build_trainer(cfg, rcfg)
    out = trainer.out
    acc = trainer.accelerator
    resumed_from = None
    if cfg.resume and (ck := newest_checkpoint(out)) is not None:
        trainer.load(ck)
        resumed_from = str(ck)
        log.info("resumed from %s at step %d", ck, trainer.step)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    bar = progress_bar(total=cfg.max_steps, initial=trainer.step, desc="boxflow", unit="step",
                       enabled=cfg.progress and acc.is_main_process)  # fmt: skip
    t0 = time.perf_counter()
    try:
        while trainer.step < cfg.max_steps:
            before = trainer.step
            m = trainer.run_round()
            trainer.history.append(m)
            bar.update(trainer.step - before)
            if acc.is_main_process:
                with open(out / "log.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps(m) + "\n")
                log.info("step %d: reward %.4f +- %.4f, penalty share %.3f, clip %.3f, detector failures %d",
                         m["step"], m["reward_mean"], m["reward_std"], m["penalty_share"], m["clip_fraction"],
                         m["detector_failures"])  # fmt: skip
            crossed = trainer.step // cfg.save_steps > before // cfg.save_steps
            if crossed or trainer.step >= cfg.max_steps:
                trainer.save()
        trainer.save(final=True)
    finally:
        bar.close()
        trainer.rewards.close()
    summary = {
        "steps": trainer.step,
        "rounds": trainer.round,
        "mode": cfg.mode,
        "resumed_from": resumed_from,
        "seconds": round(time.perf_counter() - t0, 3),
        "processes": acc.num_processes,
        "lora": str(out / LORA_FILE),
        "reward_servers": trainer.rewards.stats(),
        "history": trainer.history,
    }
    if acc.is_main_process:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def parse(argv: list[str] | None = None) -> tuple[BoxFlowConfig, BoxFlowRewardConfig]:
    from train.detector.args import kebab_parser

    argv = list(sys.argv[1:] if argv is None else argv)
    cfg, rcfg = kebab_parser((BoxFlowConfig, BoxFlowRewardConfig)).parse_args_and_config(argv)
    return cfg, rcfg


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "openai"):  # a line per reward request would drown the step lines
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cfg, rcfg = parse(argv)
    return train(cfg, rcfg)


if __name__ == "__main__":
    main()
