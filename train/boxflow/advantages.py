"""Advantages of BoxFlow-GRPO's three modes, and the clipped policy loss over the SDE window.

All three work on ``(N, L)`` maps (N samples, L tokens of the transformer's grid), normalised per location across
each prompt's group, so ``box`` mode with no boxes is the group-normalised scalar reward (with box mode's own
normalisation, below):

- ``scalar`` (Flow-GRPO): the scalar reward R, group-normalised; one value per image.
- ``mask`` (DenseFlow-GRPO style): the scalar advantage times a location mask ``1 - H``, where H is the share of
  defect types whose boxes cover the location ((B_art + B_mis) / 2, B binary). The ratio is the image's, the
  gradient spatial.
- ``box`` (BoxFlow-GRPO): a reward per location, ``R_D = R - a_art W_art - a_mis W_mis`` with
  ``a_t = c_t * std_group(R)`` and ``W_t`` the largest importance / 100 of the type-t boxes covering the location;
  normalised per location across the group; the ratio is per token. Its arithmetic is the released trainer's by
  default (unbiased std, a floor on the std, no clip, a box without importance at full weight, a box thinner
  than a cell covering nothing); :class:`BoxArithmetic` holds the alternatives.

A sample whose scalar reward failed (NaN) takes no part in its group's statistics and gets advantage 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from sdg_data.boxes import max_weight_map
from sdg_data.records import Defect


Mode = Literal["scalar", "mask", "box"]
MODES: tuple[str, ...] = ("scalar", "mask", "box")


@dataclass(frozen=True)
class BoxArithmetic:
    """How ``box`` mode turns boxes and rewards into advantages. The defaults are the released trainer's (checked
    line by line: its dense GRPO trainer, pixel reward map and dense advantage processor); the other values are
    this toolkit's variants, kept as settings (see the BoxFlow recipe for when they help)."""

    unbiased_std: bool = True  # a_t's std of R and the per-location std: torch's default (n - 1)
    sigma_min: float = 1e-6  # floor of the per-location std (dense_sigma_min): max(std, sigma_min)
    eps: float = 0.0  # added to the floored std (ours: 1e-4, as the scalar modes)
    clip: float | None = None  # clamp of the dense advantage (released: none; ours: 5.0)
    keep_thin: bool = False  # a box thinner than a token cell covers the cell it starts in (released: nothing)
    min_penalty: float = 0.0  # floor of each covered cell's penalty per type (released config: 0)


def penalty_maps(
    defects: Sequence[Sequence[Defect]], rows: int, cols: int, missing_importance: int = 100, keep_thin: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """W_art and W_mis, each ``(N, rows * cols)``: per location, the largest importance / 100 over the boxes of that
    type covering it (boxes of one type do not stack). A box without importance counts ``missing_importance``
    (the released trainer: 100, a full weight). Cells as :meth:`sdg_data.boxes.Box.grid_cells` maps them."""
    maps = {"artifact": np.zeros((len(defects), rows, cols), np.float32)}
    maps["misalignment"] = np.zeros_like(maps["artifact"])
    for i, items in enumerate(defects):
        for label, out in maps.items():
            mine = [d for d in items if d.label == label]
            if mine:
                weights = [(d.importance if d.importance is not None else missing_importance) / 100 for d in mine]
                out[i] = max_weight_map([d.box for d in mine], weights, rows, cols, keep_thin)
    return (
        torch.from_numpy(maps["artifact"].reshape(len(defects), -1)),
        torch.from_numpy(maps["misalignment"].reshape(len(defects), -1)),
    )


def _std(x: torch.Tensor, unbiased: bool) -> torch.Tensor:
    """The std over dim 0; 0 for a single row (torch's unbiased std would be NaN there)."""
    if len(x) < 2:
        return torch.zeros_like(x[:1])
    return x.std(dim=0, keepdim=True, correction=1 if unbiased else 0)


def group_normalize(
    values: torch.Tensor, groups: torch.Tensor, eps: float, unbiased: bool = False, sigma_min: float = 0.0
) -> torch.Tensor:
    """``(x - mean) / (max(std, sigma_min) + eps)`` per group along dim 0, NaN rows left out and given 0. The
    scalar modes: population std plus eps; box mode: as :class:`BoxArithmetic` says."""
    out = torch.zeros_like(values)
    valid = ~torch.isnan(values[:, 0])
    for g in torch.unique(groups):
        rows = (groups == g) & valid
        if not rows.any():
            continue
        x = values[rows]
        mean = x.mean(dim=0, keepdim=True)
        out[rows] = (x - mean) / (_std(x, unbiased).clamp(min=sigma_min) + eps)
    return out


def group_std(values: torch.Tensor, groups: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Each row's group std of a scalar per row (NaN left out); 0 for a group of one."""
    out = torch.zeros_like(values)
    for g in torch.unique(groups):
        rows = groups == g
        x = values[rows]
        x = x[~torch.isnan(x)]
        out[rows] = _std(x.reshape(-1, 1), unbiased).reshape(()) if len(x) else 0.0
    return out


@dataclass
class Advantages:
    values: torch.Tensor  # (N, L)
    mask: torch.Tensor | None  # (N, L) for mask mode
    reward_map: torch.Tensor  # (N, L): what was normalised (R_D in box mode)
    penalty: torch.Tensor  # (N, L): a_art W_art + a_mis W_mis (0 outside box mode)


def advantages(
    mode: Mode,
    rewards: torch.Tensor,
    groups: torch.Tensor,
    w_art: torch.Tensor,
    w_mis: torch.Tensor,
    c_art: float = 0.5,
    c_mis: float = 0.05,
    eps: float = 1e-4,
    clip: float = 5.0,
    box: BoxArithmetic = BoxArithmetic(),  # noqa: B008 - frozen, so one shared default is safe
) -> Advantages:
    """The ``(N, L)`` advantages of one sampling round (every rank's samples, gathered, in global order).
    ``eps`` and ``clip``: the scalar and mask modes' normalisation (population std + eps, clamped); ``box``: box
    mode's arithmetic."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    n, length = w_art.shape
    r = rewards.float().reshape(n, 1).expand(n, length)
    penalty = torch.zeros_like(r)
    mask = None
    if mode == "box":
        sigma = group_std(rewards.float(), groups, box.unbiased_std).reshape(n, 1)
        parts = []
        for c, w in ((c_art, w_art), (c_mis, w_mis)):
            p = c * sigma * w
            if box.min_penalty > 0:
                p = torch.where(w > 0, p.clamp(min=box.min_penalty), p)
            parts.append(p)
        penalty = parts[0] + parts[1]
        r = r - penalty
        values = group_normalize(r, groups, box.eps, box.unbiased_std, box.sigma_min)
        if box.clip is not None:
            values = values.clamp(-box.clip, box.clip)
        return Advantages(values, None, r, penalty)
    values = group_normalize(r, groups, eps).clamp(-clip, clip)
    if mode == "mask":
        mask = 1.0 - ((w_art > 0).float() + (w_mis > 0).float()) / 2
    return Advantages(values, mask, r, penalty)


@dataclass
class LossParts:
    loss: torch.Tensor
    clip_fraction: float
    approx_kl: float
    ratio_mean: float


def clipped_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    adv: torch.Tensor,
    clip_range: float,
    ratio_level: Literal["token", "image"],
    mask: torch.Tensor | None = None,
) -> LossParts:
    """PPO's clipped surrogate over ``(B, L)`` per-token log-probs, as a loss to minimise.

    ``token``: a ratio per token (box mode). ``image``: the image's ratio exp(mean logp - mean logp_old); with a
    ``mask`` (mask mode) the value stays the image's ratio but the gradient flows per token, weighted by the mask
    (DenseFlow-GRPO)."""
    if ratio_level == "token":
        log_ratio = log_prob - old_log_prob
        ratio = torch.exp(log_ratio)
    else:
        img = torch.exp(log_prob.mean(dim=1) - old_log_prob.mean(dim=1)).unsqueeze(1)
        if mask is None:
            ratio = img.expand_as(log_prob)
        else:
            ratio = img.detach() * torch.exp(log_prob - log_prob.detach())
        log_ratio = (log_prob.mean(dim=1) - old_log_prob.mean(dim=1)).unsqueeze(1).expand_as(log_prob)
    weight = adv if mask is None else adv * mask
    unclipped = -weight * ratio
    clipped = -weight * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        clip_fraction = float(((ratio - 1.0).abs() > clip_range).float().mean())
        approx_kl = float((0.5 * log_ratio.detach() ** 2).mean())
        ratio_mean = float(ratio.detach().mean())
    return LossParts(loss, clip_fraction, approx_kl, ratio_mean)
