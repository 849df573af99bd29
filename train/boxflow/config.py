"""BoxFlow-GRPO's settings: two dataclasses parsed by trl's parser (a YAML recipe via ``--config``, flags override,
unknown keys fail). ``--detector-url`` and ``--detector_url`` are the same flag."""

from __future__ import annotations

from dataclasses import dataclass, field

from sdg_data.config import Count, Decay, Importance, NonNegative, Positive, PositiveFloat, Seconds, check_bounds
from train.boxflow.advantages import MODES
from train.boxflow.flow_models import FLUX_LORA_TARGETS


def _h(text: str, **kw) -> dict:
    return {"metadata": {"help": text}, **kw}


@dataclass
class BoxFlowConfig:
    """Model, sampler, batch and optimiser of BoxFlow-GRPO (paper: FLUX.1-dev, 512 px, 10 steps, group 16)."""

    prompts: str = field(default=None, **_h("Training prompts: JSONL/CSV/Parquet/TXT with a 'prompt' column."))  # type: ignore[arg-type]
    output_dir: str = field(default="runs/boxflow", **_h("Checkpoints, the final LoRA, log.jsonl and summary.json."))
    model: str = field(default="black-forest-labs/FLUX.1-dev", **_h("A diffusers pipeline id or folder (FLUX.1)."))
    revision: str | None = field(default=None, **_h("The model's revision on the Hub."))
    mode: str = field(default="box", **_h(f"Advantage mode: {' | '.join(MODES)} (see train/boxflow/advantages.py)."))
    resolution: Positive = field(default=512, **_h("Image height and width in pixels (paper: 512)."))
    steps: Positive = field(default=10, **_h("Sampling steps per image (paper: 10)."))
    guidance_scale: NonNegative = field(default=3.5, **_h("FLUX guidance (one pass, guidance-distilled)."))
    noise_level: NonNegative = field(default=0.7, **_h("SDE noise level a of the window's steps (paper: 0.7)."))
    sde_steps: list[int] = field(
        default_factory=lambda: [1, 2, 3], **_h("Step indices the SDE window is drawn from (0 = the noisiest).")
    )
    num_sde_steps: Positive = field(
        default=1, **_h("SDE (trained) steps drawn from sde_steps per round; rest are ODE.")
    )
    max_sequence_length: Positive = field(default=512, **_h("T5 prompt tokens."))
    group_size: Positive = field(default=16, **_h("Images per prompt, one group (released config 16; paper text 8)."))
    prompts_per_step: Positive = field(default=48, **_h("Prompts sampled per round, over all processes."))
    per_device_batch_size: Positive = field(default=2, **_h("Images per forward pass on each process."))
    updates_per_step: Positive = field(default=2, **_h("Optimiser steps per sampling round (the round split evenly)."))
    max_steps: Positive = field(default=500, **_h("Optimiser steps in all (paper: 500)."))
    learning_rate: PositiveFloat = field(default=3e-4, **_h("AdamW learning rate."))
    weight_decay: NonNegative = field(default=1e-4, **_h("AdamW weight decay."))
    adam_beta1: Decay = field(default=0.9, **_h("AdamW beta1."))
    adam_beta2: Decay = field(default=0.999, **_h("AdamW beta2."))
    adam_epsilon: PositiveFloat = field(default=1e-8, **_h("AdamW epsilon."))
    max_grad_norm: PositiveFloat = field(default=1.0, **_h("Gradient clipping norm."))
    clip_range: PositiveFloat = field(default=1e-4, **_h("PPO ratio clip epsilon."))
    adv_clip: PositiveFloat = field(default=5.0, **_h("Scalar and mask modes: advantages clamped to +-this."))
    adv_eps: NonNegative = field(default=1e-4, **_h("Scalar and mask modes: added to the group std."))
    dense_std: str = field(default="unbiased", **_h("Box mode's stds (of R and per location): unbiased | population."))
    dense_sigma_min: NonNegative = field(default=1e-6, **_h("Box mode: floor of the per-location std (released)."))
    dense_eps: NonNegative = field(default=0.0, **_h("Box mode: added to the floored std (released 0)."))
    dense_clip: PositiveFloat | None = field(default=None, **_h("Box mode: clamp the advantage (released: none)."))
    thin_boxes: str = field(default="drop", **_h("A box thinner than a token cell: drop (released) | keep."))
    dense_min_penalty: NonNegative = field(default=0.0, **_h("Box mode: floor of a covered cell's penalty."))
    kl_beta: NonNegative = field(default=0.0, **_h("KL to the frozen base (0: no reference pass)."))
    c_art: NonNegative = field(default=0.5, **_h("Box mode: artifact penalty scale (a_art = c_art x group std of R)."))
    c_mis: NonNegative = field(default=0.05, **_h("Box mode: misalignment penalty scale c_mis."))
    lora_rank: Positive = field(default=64, **_h("LoRA rank r."))
    lora_alpha: Positive = field(default=128, **_h("LoRA alpha."))
    lora_targets: list[str] = field(
        default_factory=lambda: list(FLUX_LORA_TARGETS), **_h("Module names the LoRA attaches to.")
    )
    ema_decay: Decay = field(default=0.9, **_h("EMA decay of the LoRA weights (0: no EMA)."))
    ema_every: Positive = field(default=4, **_h("Optimiser steps between EMA updates."))
    gradient_checkpointing: bool = field(default=False, **_h("Recompute activations in backward (less memory)."))
    dtype: str = field(default="auto", **_h("auto (bf16 on GPU, fp32 on CPU) | bfloat16 | float16 | float32."))
    save_steps: Positive = field(default=50, **_h("Save a checkpoint every N optimiser steps (and at the end)."))
    save_total_limit: Positive | None = field(default=None, **_h("Keep only the newest N checkpoints."))
    resume: bool = field(default=True, **_h("Resume from the newest checkpoint in output_dir if there is one."))
    seed: Count = field(default=42, **_h("Seeds prompts, noise and the SDE window (same on every process)."))
    progress: bool = field(default=True, **_h("Show a progress bar."))

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.dense_std not in ("unbiased", "population"):
            raise ValueError(f"dense_std must be unbiased or population, got {self.dense_std!r}")
        if self.thin_boxes not in ("drop", "keep"):
            raise ValueError(f"thin_boxes must be drop or keep, got {self.thin_boxes!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in ("steps", "group_size", "prompts_per_step", "per_device_batch_size", "updates_per_step"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.group_size < 2:
            raise ValueError("group_size must be >= 2: a group of one has no spread to learn from")
        bad = [s for s in self.sde_steps if not 0 <= s < self.steps]
        if bad or not self.sde_steps:
            raise ValueError(f"sde_steps must be step indices in [0, {self.steps}), got {self.sde_steps}")
        if not 1 <= self.num_sde_steps <= len(self.sde_steps):
            raise ValueError(f"num_sde_steps must be in [1, {len(self.sde_steps)}], got {self.num_sde_steps}")


@dataclass
class BoxFlowRewardConfig:
    """The two reward servers (OpenAI-compatible) or a Python reward. Keys come from the named variables."""

    judge_url: str | None = field(default=None, **_h("Scalar judge (UnifiedReward-2.0), e.g. http://HOST:17141/v1."))
    judge_model: str = field(default="UnifiedReward", **_h("The judge's served model name."))
    judge_api_key_env: str = field(default="SDG_JUDGE_API_KEY", **_h("Variable holding the judge's key."))
    judge_template: str | None = field(default=None, **_h("Judge prompt file ({prompt}); default train/prompts."))
    judge_weights: list[float] = field(
        default_factory=lambda: [0.8, 0.1, 0.1], **_h("Weights of alignment, coherence, style (then / 5).")
    )
    judge_max_tokens: Positive = field(default=1024, **_h("Longest judge reply."))
    judge_timeout_s: Seconds = field(default=180.0, **_h("Per judge request."))
    detector_url: str | None = field(default=None, **_h("SDG detector server, e.g. http://HOST:17142/v1."))
    detector_model: str = field(default="sdg-detector", **_h("The detector's served model name."))
    detector_api_key_env: str = field(default="SDG_DETECTOR_API_KEY", **_h("Variable holding the detector's key."))
    detector_template: str | None = field(default=None, **_h("Detector prompt file ({caption}); default the core's."))
    detector_max_tokens: Positive = field(default=4096, **_h("Longest detector answer (paper: 4,096)."))
    detector_timeout_s: Seconds = field(default=180.0, **_h("Per detector request (paper: 180 s)."))
    detector_image_side: Positive = field(default=512, **_h("The image is resized to this square (paper: 512)."))
    detector_box_order: str = field(default="xyxy", **_h("How the detector writes box_2d: xyxy | yxyx."))
    python_reward: str | None = field(default=None, **_h("module:function scalar reward (replaces the judge)."))
    reward_retries: Count = field(default=2, **_h("Retries of a failed reward request."))
    reward_concurrency: Positive = field(default=32, **_h("Reward requests in flight."))
    strict_rewards: bool = field(default=False, **_h("Fail the step on any reward failure instead of counting it."))
    missing_importance: Importance = field(
        default=100, **_h("Importance of a detector box that states none (released: 100, full weight).")
    )

    def __post_init__(self) -> None:
        check_bounds(self)
        if len(self.judge_weights) != 3:
            raise ValueError(f"judge_weights needs 3 numbers (alignment, coherence, style), got {self.judge_weights}")
        if self.detector_box_order not in ("xyxy", "yxyx"):
            raise ValueError(f"detector_box_order must be xyxy or yxyx, got {self.detector_box_order!r}")
