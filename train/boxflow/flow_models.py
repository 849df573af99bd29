"""Flow-matching text-to-image models as BoxFlow-GRPO sees them: an adapter per diffusers pipeline class, and one
sampler that records the SDE window's trajectory and log-probs.

The trainer only talks to :class:`FlowAdapter`: encode prompts, draw starting latents, the sigma schedule, one
velocity evaluation, decode, the token grid and the LoRA targets. FLUX.1 (``FluxPipeline``) is the first adapter;
another flow-matching pipeline of diffusers (SD3, FLUX.2, Z-Image) is a subclass that fills in those methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from train.boxflow.sde import sde_step


# Attention q/k/v/out, the text stream's add_q/k/v and to_add_out, and both feed-forwards (paper: r 64, alpha 128).
FLUX_LORA_TARGETS = [
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
    "ff.net.0.proj",
    "ff.net.2",
    "ff_context.net.0.proj",
    "ff_context.net.2",
]


@dataclass
class Cond:
    """A batch's text conditioning: ``rows`` tensors have the batch first; ``shared`` ones are the same for all."""

    rows: dict[str, torch.Tensor]
    shared: dict[str, Any] = field(default_factory=dict)

    def select(self, index: list[int] | slice) -> Cond:
        """The rows of these samples (the shared parts as they are)."""
        return Cond({k: v[index] for k, v in self.rows.items()}, self.shared)

    @staticmethod
    def cat(parts: list[Cond]) -> Cond:
        """Several batches' conditioning as one (their shared parts must agree; the first's are kept)."""
        return Cond({k: torch.cat([p.rows[k] for p in parts]) for k in parts[0].rows}, parts[0].shared)


class FlowAdapter:
    """What BoxFlow-GRPO needs from a flow-matching pipeline. Subclasses fill in the model-specific parts."""

    lora_targets: list[str] = []

    def __init__(self, pipe: Any, height: int, width: int, guidance_scale: float, device: torch.device | str):
        self.pipe = pipe
        self.height, self.width = height, width
        self.guidance_scale = guidance_scale
        self.device = torch.device(device)

    @property
    def transformer(self) -> torch.nn.Module:
        """The denoiser the LoRA attaches to."""
        return self.pipe.transformer

    # -- to be provided per pipeline
    def encode(self, prompts: list[str]) -> Cond:
        """The prompts' text conditioning (no grad)."""
        raise NotImplementedError

    def init_latents(self, generators: list[torch.Generator]) -> torch.Tensor:
        """Starting noise, one generator per sample (per-sample seeds)."""
        raise NotImplementedError

    def sigmas(self, steps: int) -> list[float]:
        """The pipeline's own noise schedule for ``steps`` steps, ending at 0."""
        raise NotImplementedError

    def velocity(self, model: torch.nn.Module, latents: torch.Tensor, sigma: float, cond: Cond) -> torch.Tensor:
        """The model's velocity at ``sigma`` (``model``: the transformer, with or without the LoRA)."""
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> list[Any]:
        """Final latents to PIL images."""
        raise NotImplementedError

    def token_grid(self) -> tuple[int, int]:
        """The transformer's token grid (rows, columns): where box penalties land."""
        raise NotImplementedError

    def save_lora(self, folder: str, state_dict: dict[str, torch.Tensor]) -> None:
        """Write the LoRA as the pipeline's loader reads it."""
        raise NotImplementedError


class FluxAdapter(FlowAdapter):
    """FLUX.1 (``FluxPipeline``): guidance-distilled (one pass, the scale goes in as an input), latents packed
    2 x 2 into tokens, so a 512 px image is a 32 x 32 token grid."""

    lora_targets = FLUX_LORA_TARGETS

    def __init__(self, pipe: Any, height: int, width: int, guidance_scale: float, device, max_sequence_length=512):
        super().__init__(pipe, height, width, guidance_scale, device)
        self.max_sequence_length = max_sequence_length
        f = pipe.vae_scale_factor * 2  # pixels per token side
        if height % f or width % f:
            raise ValueError(f"height and width must be multiples of {f} for this model, got {height}x{width}")

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> Cond:
        embeds, pooled, text_ids = self.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, device=self.device, max_sequence_length=self.max_sequence_length
        )
        return Cond({"prompt_embeds": embeds, "pooled": pooled}, {"text_ids": text_ids})

    def _latent_hw(self) -> tuple[int, int]:
        f = self.pipe.vae_scale_factor
        return 2 * (self.height // (f * 2)), 2 * (self.width // (f * 2))

    def token_grid(self) -> tuple[int, int]:
        h, w = self._latent_hw()
        return h // 2, w // 2

    def init_latents(self, generators: list[torch.Generator]) -> torch.Tensor:
        channels = self.transformer.config.in_channels // 4
        h, w = self._latent_hw()
        rows = [
            torch.randn((1, channels, h, w), generator=g, device=g.device, dtype=torch.float32) for g in generators
        ]
        noise = torch.cat(rows).to(self.device)
        return self.pipe._pack_latents(noise, len(generators), channels, h, w)

    def sigmas(self, steps: int) -> list[float]:
        """The pipeline's own schedule for this resolution (linear sigmas, resolution-dependent shift), with the
        final 0."""
        import numpy as np
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        sched = type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)
        rows, cols = self.token_grid()
        c = sched.config
        mu = calculate_shift(
            rows * cols,
            c.get("base_image_seq_len", 256),
            c.get("max_image_seq_len", 4096),
            c.get("base_shift", 0.5),
            c.get("max_shift", 1.15),
        )
        sched.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu, device="cpu")
        return [float(s) for s in sched.sigmas]

    def velocity(self, model: torch.nn.Module, latents: torch.Tensor, sigma: float, cond: Cond) -> torch.Tensor:
        n = latents.shape[0]
        dtype = self.transformer.dtype
        h, w = self._latent_hw()
        img_ids = self.pipe._prepare_latent_image_ids(n, h // 2, w // 2, latents.device, dtype)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((n,), self.guidance_scale, device=latents.device, dtype=torch.float32)
        return model(
            hidden_states=latents.to(dtype),
            timestep=torch.full((n,), sigma, device=latents.device, dtype=dtype),
            guidance=guidance,
            pooled_projections=cond.rows["pooled"],
            encoder_hidden_states=cond.rows["prompt_embeds"],
            txt_ids=cond.shared["text_ids"],
            img_ids=img_ids,
            return_dict=False,
        )[0]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> list[Any]:
        vae = self.pipe.vae
        x = self.pipe._unpack_latents(latents, self.height, self.width, self.pipe.vae_scale_factor)
        x = (x / vae.config.scaling_factor + vae.config.shift_factor).to(vae.dtype)
        image = vae.decode(x, return_dict=False)[0]
        return self.pipe.image_processor.postprocess(image, output_type="pil")

    def save_lora(self, folder: str, state_dict: dict[str, torch.Tensor]) -> None:
        from diffusers import FluxPipeline

        FluxPipeline.save_lora_weights(folder, transformer_lora_layers=state_dict, safe_serialization=True)


ADAPTERS: dict[str, type[FlowAdapter]] = {"FluxPipeline": FluxAdapter}


def load_pipeline(model: str, dtype: torch.dtype, device: str | torch.device, revision: str | None = None) -> Any:
    """The diffusers pipeline at ``model`` (hub id or folder), on ``device``, text encoders and VAE frozen."""
    import diffusers

    pipe = diffusers.DiffusionPipeline.from_pretrained(model, dtype=dtype, revision=revision)
    if type(pipe).__name__ not in ADAPTERS:
        known = ", ".join(ADAPTERS)
        raise ValueError(f"{model}: a {type(pipe).__name__}; BoxFlow-GRPO has adapters for {known}")
    pipe.to(device)
    for name in ("vae", "text_encoder", "text_encoder_2", "transformer"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_adapter(pipe: Any, height: int, width: int, guidance_scale: float, device, **kw: Any) -> FlowAdapter:
    return ADAPTERS[type(pipe).__name__](pipe, height, width, guidance_scale, device, **kw)


# ------------------------------------------------------------------ sampling with log-probs
@dataclass
class Trajectory:
    """One batch's samples: the final latents, and for each SDE step of the window the latents before and after,
    the step's sigmas and the per-token log-prob of the transition (float32, on the sampling device)."""

    final: torch.Tensor
    steps: list[int]
    before: list[torch.Tensor]
    after: list[torch.Tensor]
    log_probs: list[torch.Tensor]  # (B, L) each
    sigmas: list[float]


@torch.no_grad()
def sample(
    adapter: FlowAdapter,
    model: torch.nn.Module,
    cond: Cond,
    generators: list[torch.Generator],
    steps: int,
    noise_level: float,
    sde_steps: list[int],
) -> Trajectory:
    """Denoise from seeded noise: SDE steps (``noise_level``) at the indices in ``sde_steps``, ODE (Euler) steps
    elsewhere; only the SDE steps' transitions are kept, since only they are trained."""
    sigmas = adapter.sigmas(steps)
    x = adapter.init_latents(generators)
    out = Trajectory(x, sorted(sde_steps), [], [], [], sigmas)
    window = set(sde_steps)
    for i in range(steps):
        v = adapter.velocity(model, x, sigmas[i], cond)
        level = noise_level if i in window else 0.0
        step = sde_step(v, x, sigmas[i], sigmas[i + 1], level, generator=generators, sigma_first_next=sigmas[1])
        if i in window:
            out.before.append(x.float())
            out.after.append(step.sample)
            out.log_probs.append(step.log_prob)
        x = step.sample.to(x.dtype)
    out.final = x
    return out
