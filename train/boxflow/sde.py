"""The flow-matching SDE step of Flow-GRPO, as one pure function: next latent, its mean and the log-prob.

A rectified-flow sampler steps ``x' = x + v (sigma' - sigma)`` (an ODE). Flow-GRPO turns the step into a Gaussian
transition with the same marginals, so a sampled trajectory has a likelihood a policy gradient can use:

    s      = noise_level * sqrt(sigma / (1 - sigma))     (at sigma = 1, 1 - sigma uses the schedule's second sigma)
    mean   = x (1 + s^2 d / (2 sigma)) + v (1 + s^2 (1 - sigma) / (2 sigma)) d,      d = sigma' - sigma < 0
    x'     = mean + s sqrt(-d) eps
    log p  = -(x' - mean)^2 / (2 s^2 (-d)) - log(s sqrt(-d)) - log(2 pi) / 2          (per element)

With ``noise_level = 0`` it is exactly the Euler step. The maths runs in float32 whatever the model's dtype.
Latents are FLUX-style packed tokens ``(batch, tokens, channels)``; ``log_prob`` comes back averaged over
channels, one value per token, so the image-level log-prob is its mean over tokens (every token has the same
channel count, so the two agree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class SDEStep:
    sample: torch.Tensor  # x', (B, L, C)
    mean: torch.Tensor  # the transition's mean, (B, L, C)
    std: torch.Tensor  # its standard deviation s sqrt(-d), a scalar tensor
    noise_scale: torch.Tensor  # s, a scalar tensor (the KL term divides by s^2, as Flow-GRPO does)
    log_prob: torch.Tensor  # per token, averaged over channels: (B, L)

    @property
    def image_log_prob(self) -> torch.Tensor:
        return self.log_prob.mean(dim=1)


def noise_scale(sigma: float, sigma_next: float, noise_level: float, sigma_first_next: float | None = None) -> float:
    """``s`` of the step. At sigma = 1 (pure noise) ``1 - sigma`` is 0, and the schedule's second sigma
    (``sigma_first_next``, default this step's next one) stands in for sigma in that denominator only."""
    if noise_level == 0.0 or sigma <= 0.0:
        return 0.0
    denom = 1.0 - (sigma if sigma < 1.0 else (sigma_first_next if sigma_first_next is not None else sigma_next))
    return noise_level * math.sqrt(sigma / denom)


def sde_step(
    velocity: torch.Tensor,
    sample: torch.Tensor,
    sigma: float,
    sigma_next: float,
    noise_level: float,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    sigma_first_next: float | None = None,
) -> SDEStep:
    """One step from ``sample`` at ``sigma`` to ``sigma_next`` given the model's ``velocity``.

    ``prev_sample`` given: the log-prob of that stored transition under this velocity (training). Else a new
    sample is drawn with ``generator`` (one per batch row, for per-sample seeds), or taken as the mean when the
    step has no noise."""
    v = velocity.float()
    x = sample.float()
    d = sigma_next - sigma
    if d >= 0:
        raise ValueError(f"sigma must decrease along the schedule, got {sigma} -> {sigma_next}")
    s = noise_scale(sigma, sigma_next, noise_level, sigma_first_next)
    if s == 0.0:  # the ODE: Euler
        mean = x + v * d
        nxt = mean if prev_sample is None else prev_sample.float()
        zero = torch.zeros(mean.shape[:2], dtype=torch.float32, device=mean.device)
        z = torch.zeros((), device=mean.device)
        return SDEStep(nxt, mean, z, z, zero)
    mean = x * (1 + s * s * d / (2 * sigma)) + v * (1 + s * s * (1 - sigma) / (2 * sigma)) * d
    std = s * math.sqrt(-d)
    if prev_sample is None:
        noise = _randn(mean, generator)
        nxt = mean + std * noise
    else:
        nxt = prev_sample.float()
    elem = -((nxt.detach() - mean) ** 2) / (2 * std * std) - math.log(std) - 0.5 * math.log(2 * math.pi)
    t = torch.tensor
    return SDEStep(nxt, mean, t(std, device=mean.device), t(s, device=mean.device), elem.mean(dim=-1))


def _randn(like: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None) -> torch.Tensor:
    if isinstance(generator, list):
        if len(generator) != like.shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {like.shape[0]}")
        rows = [torch.randn(like.shape[1:], generator=g, dtype=torch.float32, device=g.device) for g in generator]
        return torch.stack(rows).to(like.device)
    return torch.randn(like.shape, generator=generator, dtype=torch.float32, device=like.device)
