"""BoxFlow-GRPO: the SDE step, the advantages of its three modes, the rewards against loopback servers with faults,
training on a tiny random FLUX.1 (weights move, resume is exact, two processes agree), and the saved LoRA in use."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sdg_data.boxes import Box, max_weight_map
from sdg_data.records import Defect
from train.boxflow.advantages import BoxArithmetic, advantages, clipped_loss, penalty_maps
from train.boxflow.sde import noise_scale, sde_step


ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "train" / "recipes" / "boxflow" / "smoke.yaml"
PAPER = ROOT / "train" / "recipes" / "boxflow" / "flux1_dev_sdg.yaml"
PROMPTS = ["a red apple on a table", "a cat asleep on a sofa", "two dogs in the snow"]


@pytest.fixture(scope="module")
def flux1(tmp_path_factory):
    from sdg_data.testkit.pipelines import save_tiny_pipelines

    return save_tiny_pipelines(tmp_path_factory.mktemp("models"), ["flux1"])["flux1"]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    p = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    p.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in PROMPTS))
    return p


@pytest.fixture(scope="module")
def pipe(flux1):
    from train.boxflow.flow_models import load_pipeline

    return load_pipeline(str(flux1), torch.float32, "cpu")


def _argv(flux1, prompts, out, *more: str) -> list[str]:
    return ["--config", str(SMOKE), "--model", str(flux1), "--prompts", str(prompts), "--output_dir", str(out),
            *more]  # fmt: skip


def _lora(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "pytorch_lora_weights.safetensors")


# ------------------------------------------------------------------ the SDE step
def test_noise_zero_is_the_schedulers_euler_step():
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler()
    sched.set_timesteps(sigmas=np.linspace(1.0, 0.1, 10), mu=0.8)
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(2, 16, 8, generator=g), torch.randn(2, 16, 8, generator=g)
    for i in (0, 3, 9):
        sched._step_index = i
        ref = sched.step(v, sched.timesteps[i], x, return_dict=False)[0]
        step = sde_step(v, x, float(sched.sigmas[i]), float(sched.sigmas[i + 1]), 0.0)
        torch.testing.assert_close(step.sample, ref, rtol=0, atol=1e-6)
        assert torch.equal(step.log_prob, torch.zeros(2, 16))


def test_a_sampled_transition_recomputed_has_the_stored_log_prob_and_tokens_average_to_the_image():
    g = torch.Generator().manual_seed(1)
    x, v = torch.randn(3, 64, 16, generator=g), torch.randn(3, 64, 16, generator=g)
    gens = [torch.Generator().manual_seed(s) for s in range(3)]
    drawn = sde_step(v, x, 0.8, 0.6, 0.7, generator=gens, sigma_first_next=0.9)
    again = sde_step(v.clone(), x.clone(), 0.8, 0.6, 0.7, prev_sample=drawn.sample, sigma_first_next=0.9)
    torch.testing.assert_close(again.log_prob, drawn.log_prob, rtol=0, atol=1e-6)
    # per token: the mean over channels; the image's: the mean over every element, which is their mean
    s = noise_scale(0.8, 0.6, 0.7, 0.9)
    std = s * math.sqrt(0.2)
    elem = -((drawn.sample - drawn.mean) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(drawn.image_log_prob, elem.mean(dim=(1, 2)), rtol=1e-6, atol=1e-6)
    # the first step (sigma = 1) uses the schedule's second sigma in 1 - sigma, so the scale stays finite
    assert math.isfinite(noise_scale(1.0, 0.9, 0.7, 0.9)) and noise_scale(1.0, 0.9, 0.7, 0.9) == 0.7 * math.sqrt(10)


def test_sampling_with_the_model_then_recomputing_under_the_same_weights_gives_ratio_one(pipe):
    from train.boxflow.flow_models import make_adapter, sample

    ad = make_adapter(pipe, 64, 64, 3.5, "cpu", max_sequence_length=32)
    cond = ad.encode(PROMPTS[:2])
    traj = sample(ad, pipe.transformer, cond, [torch.Generator().manual_seed(s) for s in (5, 6)], 4, 0.7, [1, 2])
    assert traj.steps == [1, 2] and traj.log_probs[0].shape == (2, 16 * 16)
    for j, i in enumerate(traj.steps):
        v = ad.velocity(pipe.transformer, traj.before[j], traj.sigmas[i], cond)
        step = sde_step(v, traj.before[j], traj.sigmas[i], traj.sigmas[i + 1], 0.7, prev_sample=traj.after[j],
                        sigma_first_next=traj.sigmas[1])  # fmt: skip
        ratio = torch.exp(step.log_prob - traj.log_probs[j])
        assert (ratio - 1).abs().max() < 1e-5


def test_the_ode_sampler_reproduces_the_diffusers_pipeline(pipe):
    from train.boxflow.flow_models import make_adapter, sample

    ad = make_adapter(pipe, 64, 64, 3.5, "cpu", max_sequence_length=32)
    traj = sample(ad, pipe.transformer, ad.encode(PROMPTS[:1]), [torch.Generator().manual_seed(3)], 4, 0.0, [])
    ours = np.asarray(ad.decode(traj.final)[0], dtype=int)
    ref = pipe(PROMPTS[:1], height=64, width=64, num_inference_steps=4, guidance_scale=3.5, max_sequence_length=32,
               generator=torch.Generator().manual_seed(3)).images[0]  # fmt: skip
    assert np.abs(ours - np.asarray(ref, dtype=int)).max() == 0


# ------------------------------------------------------------------ box -> token grid
def test_flux_token_grid_at_512_px_and_boxes_on_cell_edges():
    from types import SimpleNamespace

    from train.boxflow.flow_models import FluxAdapter

    fake = SimpleNamespace(vae_scale_factor=8)  # FLUX.1's VAE: 8x, then 2x2 packing: 64x64 latents, 32x32 tokens
    assert FluxAdapter(fake, 512, 512, 3.5, "cpu").token_grid() == (32, 32)
    cell = 1000 / 32  # 31.25 grid units a token
    assert Box(0, 0, 500, 500).grid_cells(32, 32) == (0, 16, 0, 16)
    assert Box(3 * cell, 5 * cell, 7 * cell, 6 * cell).grid_cells(32, 32) == (5, 6, 3, 7)
    assert Box(0, 0, 1000, 1000).grid_cells(32, 32) == (0, 32, 0, 32)
    thin = Box(3 * cell + 1, 0, 4 * cell - 1, 10)  # inside one cell: covers nothing (released), or that cell (keep)
    assert thin.grid_cells(32, 32) == (0, 0, 3, 3) and thin.grid_cells(32, 32, keep_thin=True) == (0, 1, 3, 4)
    assert Box(990, 990, 1000, 1000).grid_cells(32, 32) == (31, 32, 31, 32)
    m = max_weight_map([Box(0, 0, 500, 500)], [0.4], 32, 32)
    assert m.sum() == pytest.approx(0.4 * 256) and m[15, 15] == pytest.approx(0.4) and m[16, 16] == 0


# ------------------------------------------------------------------ advantages
def _d(box, label, imp):
    return Defect(Box(*box), label, "x", imp)


def test_box_mode_without_boxes_is_the_normalised_scalar_reward():
    r = torch.tensor([0.2, 0.5, 0.9, 0.4, 0.1, 0.3, 0.8, 0.6])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    z = torch.zeros(8, 64)
    box = advantages("box", r, groups, z, z)  # the released arithmetic: unbiased std, floored, not clipped
    torch.testing.assert_close(box.values[:4, 0], (r[:4] - r[:4].mean()) / r[:4].std())
    assert torch.equal(box.values, box.values[:, :1].expand(8, 64))
    scalar = advantages("scalar", r, groups, z, z)
    ours = BoxArithmetic(unbiased_std=False, sigma_min=0.0, eps=1e-4, clip=5.0)  # the scalar modes' arithmetic
    assert torch.equal(advantages("box", r, groups, z, z, box=ours).values, scalar.values)
    # scalar mode is Flow-GRPO's group-normalised reward, one value per image
    mean, std = r[:4].mean(), r[:4].std(unbiased=False)
    torch.testing.assert_close(scalar.values[:4, 0], (r[:4] - mean) / (std + 1e-4))
    assert torch.equal(scalar.values, scalar.values[:, :1].expand(8, 64))


def test_penalty_maps_take_the_max_within_a_type_and_add_across_types():
    items = [
        [_d((0, 0, 500, 500), "artifact", 40), _d((250, 250, 750, 750), "artifact", 80)],
        [_d((0, 0, 500, 500), "artifact", 60), _d((0, 0, 1000, 500), "misalignment", 50)],
    ]
    w_art, w_mis = penalty_maps(items, 4, 4)
    a0 = w_art[0].reshape(4, 4)
    assert a0[0, 0] == pytest.approx(0.4) and a0[1, 1] == pytest.approx(0.8) and a0[3, 3] == 0  # max, not 0.4 + 0.8
    r = torch.tensor([1.0, 0.0])
    adv = advantages("box", r, torch.tensor([0, 0]), w_art, w_mis, c_art=0.5, c_mis=0.05)
    sigma = 2**-0.5  # the unbiased std of (1, 0)
    pen1 = (0.5 * sigma * w_art[1] + 0.05 * sigma * w_mis[1]).reshape(4, 4)
    assert pen1[0, 0] == pytest.approx(0.5 * sigma * 0.6 + 0.05 * sigma * 0.5)  # the two types add
    torch.testing.assert_close(adv.penalty[1].reshape(4, 4), pen1)
    # by hand at cell (0, 0): R_D = 1 - 0.5 s 0.4 and 0 - (0.5 s 0.6 + 0.05 s 0.5); two values, each 1/sqrt(2) of
    # their unbiased std from the mean: +-0.7071 wherever they differ
    rd = torch.tensor([1 - 0.5 * sigma * 0.4, -(0.5 * sigma * 0.6 + 0.05 * sigma * 0.5)])
    torch.testing.assert_close(adv.reward_map[:, 0], rd)
    torch.testing.assert_close(adv.values[:, 0], torch.tensor([2**-0.5, -(2**-0.5)]))


def _released(rewards, boxes, group_size, grid, c_art=0.5, c_mis=0.05, sigma_min=1e-6):
    """The released trainer's box-mode arithmetic, written independently in plain Python from the method notes:
    a_t = c_t * unbiased std of the group's R (0 for one), boxes to cells by int truncation of both edges
    ([r0, r1) x [c0, c1), clamped), a box without importance weighs 1.0, the max within a type, the types add,
    then per location (R_D - mean) / max(unbiased std, sigma_min), no clip."""
    import statistics

    n = len(rewards)
    out = [[0.0] * (grid * grid) for _ in range(n)]
    rd = [[0.0] * (grid * grid) for _ in range(n)]
    for g0 in range(0, n, group_size):
        idx = list(range(g0, min(n, g0 + group_size)))
        rs = [rewards[i] for i in idx]
        sd = statistics.stdev(rs) if len(rs) > 1 else 0.0
        for i in idx:
            w = {"artifact": [0.0] * (grid * grid), "misalignment": [0.0] * (grid * grid)}
            for (x0, y0, x1, y1), label, imp in boxes[i]:
                r0, r1 = min(int(y0 * grid / 1000), grid), min(int(y1 * grid / 1000), grid)
                c0, c1 = min(int(x0 * grid / 1000), grid), min(int(x1 * grid / 1000), grid)
                for r in range(r0, r1):
                    for c in range(c0, c1):
                        k = r * grid + c
                        w[label][k] = max(w[label][k], (100 if imp is None else imp) / 100)
            for k in range(grid * grid):
                rd[i][k] = rewards[i] - c_art * sd * w["artifact"][k] - c_mis * sd * w["misalignment"][k]
        for k in range(grid * grid):
            col = [rd[i][k] for i in idx]
            mean = sum(col) / len(col)
            sdk = statistics.stdev(col) if len(col) > 1 else 0.0
            for i in idx:
                out[i][k] = (rd[i][k] - mean) / max(sdk, sigma_min)
    return out


def _ours(rewards, boxes, group_size, grid):
    items = [[_d(b, label, imp) for b, label, imp in bs] for bs in boxes]
    w_art, w_mis = penalty_maps(items, grid, grid)
    groups = torch.arange(len(rewards)) // group_size
    return advantages("box", torch.tensor(rewards, dtype=torch.float64), groups, w_art.double(), w_mis.double())


def test_box_mode_is_the_released_arithmetic_on_hand_computed_groups():
    """A group of two, a flat group, a box thinner than a cell and a box without importance, by hand (2 x 2 grid)."""
    # a group of two, one artifact box without importance over the left column: weighs 1.0
    adv = _ours([0.8, 0.2], [[((0, 0, 500, 1000), "artifact", None)], []], 2, 2)
    s = 0.6 / 2**0.5  # the unbiased std of (0.8, 0.2)
    torch.testing.assert_close(
        adv.reward_map[0].reshape(2, 2)[:, 0], torch.full((2,), 0.8 - 0.5 * s, dtype=torch.float64)
    )
    # the left column: 0.8 - 0.2121 = 0.5879 vs 0.2, still ahead, so each is 1/sqrt(2) from the mean; the right: same
    torch.testing.assert_close(adv.values[:, 0], torch.tensor([2**-0.5, -(2**-0.5)], dtype=torch.float64))
    # a flat group: std 0, so no penalty and, with the floor, advantage 0 everywhere (no division by zero)
    flat = _ours([0.5, 0.5, 0.5], [[((0, 0, 1000, 1000), "artifact", 90)], [], []], 3, 2)
    assert torch.equal(flat.penalty, torch.zeros_like(flat.penalty)) and torch.equal(
        flat.values, torch.zeros(3, 4, dtype=torch.float64)
    )
    # a box thinner than a cell (between two cell edges) covers nothing: the same as no box
    thin = _ours([0.9, 0.1], [[((510, 10, 740, 490), "artifact", 80)], []], 2, 2)
    assert torch.equal(thin.penalty, torch.zeros_like(thin.penalty))
    kept = advantages("box", torch.tensor([0.9, 0.1]), torch.tensor([0, 0]),
                      *penalty_maps([[_d((510, 10, 740, 490), "artifact", 80)], []], 2, 2, keep_thin=True),
                      box=BoxArithmetic(keep_thin=True))  # fmt: skip
    assert kept.penalty[0].tolist() == pytest.approx([0, 0.5 * 0.8 * 0.8 / 2**0.5, 0, 0])  # ours: its cell
    # a group of one: std 0, advantage 0
    assert torch.equal(
        _ours([0.7], [[((0, 0, 1000, 1000), "artifact", 50)]], 1, 2).values, torch.zeros(1, 4, dtype=torch.float64)
    )


def test_box_mode_matches_an_independent_reference_on_300_random_groups():
    import random

    rng = random.Random(7)
    for _ in range(300):
        size, grid = rng.randint(2, 16), rng.choice([4, 8, 16, 32])
        rewards = [round(rng.random(), 3) for _ in range(size)]
        boxes = []
        for _ in range(size):
            bs = []
            for _ in range(rng.randint(0, 3)):
                x0, y0 = rng.randint(0, 990), rng.randint(0, 990)
                box = (x0, y0, rng.randint(x0 + 1, 1000), rng.randint(y0 + 1, 1000))
                bs.append((box, rng.choice(["artifact", "misalignment"]), rng.choice([None, rng.randint(1, 100)])))
            boxes.append(bs)
        got = _ours(rewards, boxes, size, grid).values
        want = torch.tensor(_released(rewards, boxes, size, grid), dtype=torch.float64)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)  # the maps are float32


def test_a_box_over_everything_shifts_every_location_equally():
    full = [[_d((0, 0, 1000, 1000), "artifact", 70)], [], [], []]
    w_art, w_mis = penalty_maps(full, 8, 8)
    r = torch.tensor([0.9, 0.5, 0.4, 0.1])
    adv = advantages("box", r, torch.zeros(4, dtype=torch.long), w_art, w_mis)
    assert torch.equal(adv.values, adv.values[:, :1].expand(4, 64))  # the same at every location
    plain = advantages("scalar", r, torch.zeros(4, dtype=torch.long), w_art, w_mis)
    assert adv.values[0, 0] < plain.values[0, 0]  # the penalised image's advantage went down


def test_mask_mode_keeps_the_scalar_advantage_and_masks_defect_locations():
    items = [[_d((0, 0, 500, 500), "artifact", 90)], []]
    w_art, w_mis = penalty_maps(items, 2, 2)
    r = torch.tensor([0.7, 0.3])
    m = advantages("mask", r, torch.tensor([0, 0]), w_art, w_mis)
    s = advantages("scalar", r, torch.tensor([0, 0]), w_art, w_mis)
    assert torch.equal(m.values, s.values)
    assert m.mask[0].tolist() == [0.5, 1.0, 1.0, 1.0] and m.mask[1].tolist() == [1.0] * 4


def test_a_failed_judge_leaves_the_sample_out_of_its_group():
    r = torch.tensor([0.2, math.nan, 0.6, 0.4])
    z = torch.zeros(4, 4)
    adv = advantages("box", r, torch.zeros(4, dtype=torch.long), z, z)
    assert torch.equal(adv.values[1], torch.zeros(4)) and not torch.isnan(adv.values).any()
    torch.testing.assert_close(adv.values[[0, 2, 3], 0].mean(), torch.tensor(0.0), atol=1e-6, rtol=0)


def test_zero_advantage_gives_zero_gradient_and_scalar_loss_is_flow_grpos():
    logp = torch.randn(2, 16, requires_grad=True)
    old = logp.detach() + 0.01 * torch.randn(2, 16)
    zero = clipped_loss(logp, old, torch.zeros(2, 16), 1e-4, "token")
    zero.loss.backward()
    assert torch.equal(logp.grad, torch.zeros(2, 16))
    a = torch.tensor([[1.5], [-0.5]]).expand(2, 16)
    parts = clipped_loss(logp, old, a, 0.2, "image")
    r = torch.exp(logp.mean(1) - old.mean(1))
    ref = torch.maximum(-a[:, 0] * r, -a[:, 0] * r.clamp(0.8, 1.2)).mean()
    torch.testing.assert_close(parts.loss, ref)


# ------------------------------------------------------------------ rewards
def test_judge_replies_are_read_in_either_wording():
    from train.boxflow.rewards import combine, judge_scores

    assert judge_scores("Alignment Score (1-5): 4\nCoherence Score (1-5): 3.5\nStyle Score (1-5): 5") == (4, 3.5, 5)
    assert judge_scores("alignment looks fine, 5 stars\nAlignment: 2\nCoherence: 3\nStyle: 4") == (2, 3, 4)
    assert combine((5, 5, 5)) == pytest.approx(1.0) and combine((1, 1, 1)) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="coherence, style"):
        judge_scores("Alignment: 3")


def test_rewards_from_loopback_servers_with_latency_and_faults_are_counted_not_fatal(monkeypatch):
    from PIL import Image

    from sdg_data.testkit.reward_servers import RewardServers
    from train.boxflow.config import BoxFlowRewardConfig
    from train.boxflow.rewards import RewardService

    monkeypatch.setenv("SDG_JUDGE_API_KEY", "sk-judge-secret-123456")
    images = [Image.new("RGB", (64, 64), (30 * i, 40, 90)) for i in range(8)]
    with RewardServers(latency=0.05, fault_rate=0.5, faults=("500", "timeout", "moved"), hang_s=1.5) as srv:
        cfg = BoxFlowRewardConfig(judge_url=srv.judge_url, detector_url=srv.detector_url, reward_retries=0,
                                  judge_timeout_s=0.5, detector_timeout_s=0.5, detector_image_side=64)  # fmt: skip
        service = RewardService(cfg)
        try:
            out = service.score(images, ["p"] * 8, [f"i{k}" for k in range(8)])
        finally:
            service.close()
        injected = sum(srv.judge.injected.values()) + sum(srv.detector.injected.values())
    judged = [s for s in out.scores if not math.isnan(s)]
    failures = sum(x is not None for x in out.judge_failed + out.detector_failed)
    assert failures == injected > 0  # every fault shows up as a counted failure, nothing else fails
    assert all(0.2 <= s <= 1.0 for s in judged)
    for i, why in enumerate(out.detector_failed):
        if why is not None:
            assert out.defects[i] == []  # no penalty
        else:
            assert out.defects[i] and out.defects[i][0].label == "artifact"
    assert any(w and "unparseable" in w for w in out.detector_failed + [None]) or srv.detector.injected["moved"] == 0


# ------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def run(flux1, prompts, tmp_path_factory):
    """4 optimiser steps of box mode against loopback servers (with a key set), checkpoints every 2."""
    from sdg_data.testkit.reward_servers import RewardServers
    from train.boxflow.trainer import main

    out = tmp_path_factory.mktemp("boxflow") / "run"
    os.environ["SDG_DETECTOR_API_KEY"] = "sk-detector-secret-987654"
    try:
        with RewardServers(latency=0.01, fault_rate=0.2, faults=("500", "moved"), seed=3) as srv:
            argv = _argv(flux1, prompts, out, "--judge-url", srv.judge_url, "--detector-url", srv.detector_url,
                         "--max_steps", "4", "--reward_retries", "0")  # fmt: skip
            summary = main(argv)
            injected = dict(srv.detector.injected)
    finally:
        del os.environ["SDG_DETECTOR_API_KEY"]
    return out, summary, injected


def test_a_few_steps_move_the_lora_and_log_what_the_issue_asks(run, flux1):
    out, summary, injected = run
    assert summary["steps"] == 4 and summary["rounds"] == 2 and summary["mode"] == "box"
    first = torch.load(out / "checkpoint-2" / "training_state.pt", weights_only=False)["params"]
    last = torch.load(out / "checkpoint-4" / "training_state.pt", weights_only=False)["params"]
    assert any(not torch.equal(first[k], last[k]) for k in first)
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [m["step"] for m in log] == [2, 4]
    for m in log:
        assert math.isfinite(m["loss"]) and math.isfinite(m["reward_mean"]) and m["reward_std"] > 0
        for key in ("penalty_share", "artifacts_per_image", "misalignments_per_image", "detector_failures",
                    "clip_fraction", "approx_kl", "reward_hidden"):  # fmt: skip
            assert key in m
    # a failed detector call costs nothing but a count; the run went on
    assert sum(m["detector_failures"] for m in log) == sum(injected.values()) > 0
    # the key was used, never written
    for f in out.rglob("*"):
        if f.is_file():
            assert b"sk-detector-secret" not in f.read_bytes(), f


def test_resume_continues_from_the_saved_step_with_the_same_state(flux1, prompts, tmp_path):
    """Cut the run after checkpoint-2 and resume: the LoRA at step 4 is the uninterrupted run's."""
    import shutil

    from sdg_data.testkit.reward_servers import RewardServers
    from train.boxflow.trainer import main

    with RewardServers(latency=0.0) as srv:  # no faults: both runs get the same answers
        ref = tmp_path / "ref"
        base = ["--judge-url", srv.judge_url, "--detector-url", srv.detector_url, "--max_steps", "4"]
        main(_argv(flux1, prompts, ref, *base))
        cut = tmp_path / "cut"
        shutil.copytree(ref / "checkpoint-2", cut / "checkpoint-2")
        summary = main(_argv(flux1, prompts, cut, *base))
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["steps"] == 4 and summary["rounds"] == 2
    a = torch.load(ref / "checkpoint-4" / "training_state.pt", weights_only=False)
    b = torch.load(cut / "checkpoint-4" / "training_state.pt", weights_only=False)
    for k in a["params"]:
        torch.testing.assert_close(a["params"][k], b["params"][k], rtol=0, atol=1e-6)
        torch.testing.assert_close(a["ema"][k], b["ema"][k], rtol=0, atol=1e-6)
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()


def test_the_saved_lora_loads_in_flux_pipeline_and_changes_the_images(run, flux1):
    from diffusers import FluxPipeline

    out, _, _ = run
    kw = {"height": 64, "width": 64, "num_inference_steps": 4, "guidance_scale": 3.5, "max_sequence_length": 32,
          "output_type": "np"}  # fmt: skip
    pipe = FluxPipeline.from_pretrained(str(flux1))
    base = pipe(PROMPTS[0], generator=torch.Generator().manual_seed(0), **kw).images
    pipe.load_lora_weights(str(out))
    tuned = pipe(PROMPTS[0], generator=torch.Generator().manual_seed(0), **kw).images
    assert np.abs(base - tuned).max() > 0
    assert len(_lora(out)) == len(_lora(out / "checkpoint-4")) > 0


def test_sdg_generate_lora_uses_it_and_records_it(run, flux1, tmp_path):
    out, _, _ = run
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red apple\n")
    recipe = tmp_path / "g.yaml"
    recipe.write_text("height: 64\nwidth: 64\nsteps: 4\nguidance_scale: 3.5\n")
    sdg = str(Path(sys.executable).parent / "sdg")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    rows = {}
    for arm, extra in (("base", []), ("lora", ["--lora", str(out)])):
        cmd = [sdg, "generate", "--prompts", str(prompts), "--out", str(tmp_path / arm), "--generator", str(flux1),
               "--config", str(recipe), *extra]  # fmt: skip
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-2000:]
        rows[arm] = json.loads((tmp_path / arm / "manifest.jsonl").read_text().splitlines()[0])
    assert rows["base"]["image_id"] != rows["lora"]["image_id"]
    assert rows["lora"]["provenance"]["lora"]["path"] == str(out) and rows["base"]["provenance"]["lora"] is None
    from PIL import Image

    a = np.asarray(Image.open(tmp_path / "base" / rows["base"]["image_path"]), dtype=int)
    b = np.asarray(Image.open(tmp_path / "lora" / rows["lora"]["image_path"]), dtype=int)
    assert np.abs(a - b).max() > 0
    cmd = [sdg, "generate", "--prompts", str(prompts), "--out", str(tmp_path / "x"), "--generator", str(flux1),
           "--lora", str(tmp_path / "nope")]  # fmt: skip
    bad = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "no such file or folder" in bad.stderr and "Traceback" not in bad.stderr


def test_two_processes_share_a_group_and_compute_the_same_advantages(flux1, prompts, tmp_path):
    from sdg_data.testkit.reward_servers import RewardServers

    accelerate = str(Path(sys.executable).parent / "accelerate")
    out = tmp_path / "ddp"
    with RewardServers() as srv:
        cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "train.boxflow.trainer",
               *_argv(flux1, prompts, out, "--judge-url", srv.judge_url, "--detector-url", srv.detector_url,
                      "--max_steps", "2", "--updates_per_step", "1", "--group_size", "2", "--prompts_per_step", "2",
                      "--per_device_batch_size", "1")]  # fmt: skip
        res = subprocess.run(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                             cwd=ROOT, timeout=400)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [[json.loads(x) for x in (out / "ranks" / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    for a, b in zip(*ranks):
        assert a["round"] == b["round"]
        assert a["groups"] == b["groups"] == [0, 1]  # each group has a member on each process
        assert set(a["samples"]).isdisjoint(b["samples"]) and sorted(a["samples"] + b["samples"]) == [0, 1, 2, 3]
        assert a["gathered"] == b["gathered"] == [0, 1, 2, 3]
        assert a["advantages_sha256"] == b["advantages_sha256"]
        # within a group of two, the members' advantages are opposite (normalised), one on each process
        assert a["advantage_rows"]["0"] == pytest.approx(-b["advantage_rows"]["1"], abs=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 2
    assert (out / "pytorch_lora_weights.safetensors").is_file()


# ------------------------------------------------------------------ configuration
def test_recipes_parse_with_the_papers_values_and_unknown_keys_fail(tmp_path):
    from train.boxflow.trainer import check_batch, parse

    cfg, rcfg = parse(["--config", str(PAPER), "--prompts", "p.jsonl", "--detector-url", "http://h:17142/v1"])
    assert (cfg.model, cfg.resolution, cfg.steps, cfg.guidance_scale, cfg.noise_level) == (
        "black-forest-labs/FLUX.1-dev", 512, 10, 3.5, 0.7)  # fmt: skip
    assert (cfg.group_size, cfg.learning_rate, cfg.clip_range, cfg.adv_clip, cfg.max_steps) == (16, 3e-4, 1e-4, 5, 500)
    assert (cfg.ema_decay, cfg.ema_every, cfg.lora_rank, cfg.lora_alpha, cfg.sde_steps) == (0.9, 4, 64, 128, [1, 2, 3])
    assert (cfg.c_art, cfg.c_mis, cfg.mode) == (0.5, 0.05, "box")
    assert rcfg.detector_url == "http://h:17142/v1" and rcfg.detector_image_side == 512
    assert (rcfg.detector_max_tokens, rcfg.detector_timeout_s) == (4096, 180)
    assert check_batch(cfg, 8) == {"images_per_round": 768, "images_per_process": 96, "batches_per_update": 24}
    cfg8, _ = parse(["--config", str(PAPER), "--group_size", "8", "--prompts", "p"])
    assert cfg8.group_size == 8  # the paper's text: a flag away
    bad = tmp_path / "bad.yaml"
    bad.write_text(PAPER.read_text() + "sde_window: 3\n")
    with pytest.raises(ValueError, match="sde_window"):
        parse(["--config", str(bad)])
    with pytest.raises(ValueError, match="do not divide over 7 processes"):
        check_batch(cfg, 7)


def test_sdg_train_boxflow_explains_a_missing_reward_in_one_line(flux1, prompts, tmp_path):
    sdg = str(Path(sys.executable).parent / "sdg")
    res = subprocess.run([sdg, "train", "boxflow", *_argv(flux1, prompts, tmp_path / "o")], capture_output=True,
                         text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert res.returncode == 2 and "no scalar reward" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([sdg, "train", "boxflow", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--detector-url" in res.stdout and "--mode" in res.stdout
    first = next(i for i, line in enumerate(res.stdout.splitlines()) if line.strip().startswith("--"))
    assert res.stdout.splitlines()[first].strip().startswith("--config NAME|PATH")  # the recipe flags first


def test_eval_lora_pairs_prompts_and_reports_intervals(run, flux1, tmp_path):
    from sdg_data.testkit.reward_servers import RewardServers
    from train.boxflow.lora_eval import LoraEvalConfig, evaluate, t_interval

    ci = t_interval([1.0, 2.0, 3.0], 0.95)
    assert ci["mean"] == 2.0 and ci["low"] == pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-5)
    out, _, _ = run
    prompts = tmp_path / "drawbench.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    recipe = tmp_path / "g.yaml"
    recipe.write_text("height: 64\nwidth: 64\nsteps: 4\nguidance_scale: 3.5\nprogress: false\n")
    with RewardServers() as srv:
        cfg = LoraEvalConfig(generator=str(flux1), lora=str(out), seeds=2, generate_recipe=str(recipe),
                             detector_url=srv.detector_url,
                             scorers=["sdg_data.testkit.reward_servers:brightness_score"])  # fmt: skip
        result = evaluate(str(prompts), tmp_path / "ev", cfg)
    assert result["base"]["images"] == result["lora"]["images"] == 6
    assert result["counts"]["lora"]["generated"] == 6
    d = result["paired"]["defects_per_image"]
    assert d["diff"]["n"] == 3 and d["lora"] - d["base"] == pytest.approx(d["diff"]["mean"])
    s = result["paired"]["score:sdg_data.testkit.reward_servers:brightness_score"]
    assert s["diff"]["n"] == 3 and s["diff"]["low"] <= s["diff"]["mean"] <= s["diff"]["high"]
    assert "| defects_per_image |" in (tmp_path / "ev" / "lora_eval.md").read_text()


@pytest.mark.parametrize("mode,extra", [("mask", []), ("scalar", ["--kl_beta", "0.5"])])
def test_mask_mode_and_scalar_mode_with_kl_train_from_a_python_reward(flux1, prompts, tmp_path, mode, extra):
    from train.boxflow.trainer import main

    reward = ["--python_reward", "sdg_data.testkit.reward_servers:brightness_reward"]
    s = main(_argv(flux1, prompts, tmp_path / mode, *reward, "--mode", mode, "--max_steps", "4", *extra))
    assert s["steps"] == 4 and s["mode"] == mode
    assert all(math.isfinite(h["loss"]) and h["artifacts_per_image"] == 1.0 for h in s["history"])
    assert all(h["penalty_share"] == 0.0 for h in s["history"])  # only box mode turns boxes into a penalty


def test_every_boxflow_setting_has_help():
    import dataclasses

    from train.boxflow.config import BoxFlowConfig, BoxFlowRewardConfig

    for cls in (BoxFlowConfig, BoxFlowRewardConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
