"""The script arguments the SFT and GRPO scripts add to trl's ``SFTConfig`` / ``GRPOConfig`` / ``ModelConfig``.

They go through ``trl.TrlParser``: a YAML recipe (``--config``) sets values, command-line flags override them, and
an unknown key in either fails.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

from trl import ScriptArguments

from sdg_data.config import Positive, check_bounds


# The paper's image resolution bounds (MIN_PIXELS / MAX_PIXELS of the SFT run).
PAPER_MIN_PIXELS = 200_704
PAPER_MAX_PIXELS = 1_280_000


@dataclass
class SDGScriptArguments(ScriptArguments):
    """Data and detector options shared by SFT and GRPO."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A folder written by `sdg build`, or a Hub dataset id with the same configs."},
    )
    dataset_test_split: str | None = field(
        default=None, metadata={"help": "Split to evaluate on during training (the sft/grpo configs have none)."}
    )
    min_pixels: Positive | None = field(
        default=PAPER_MIN_PIXELS, metadata={"help": "Fewest pixels an image is resized to (paper: 200,704)."}
    )
    max_pixels: Positive | None = field(
        default=PAPER_MAX_PIXELS, metadata={"help": "Most pixels an image is resized to (paper: 1,280,000)."}
    )
    freeze_vision: bool = field(default=True, metadata={"help": "Freeze the vision encoder (the paper's freeze_vit)."})
    global_batch_size: Positive | None = field(
        default=None,
        metadata={
            "help": "Samples per optimizer step over all processes. When set, gradient_accumulation_steps is derived "
            "from it (global / (world size x per-device batch)), so one recipe runs on 1 GPU or 16."
        },
    )
    max_train_samples: Positive | None = field(
        default=None, metadata={"help": "Use only the first N rows (smoke runs)."}
    )

    def __post_init__(self) -> None:
        if hasattr(super(), "__post_init__"):
            super().__post_init__()
        check_bounds(self)


@dataclass
class SDGGRPOScriptArguments(SDGScriptArguments):
    """GRPO adds the reward's description embedder and constants."""

    dataset_config: str | None = field(default="grpo", metadata={"help": "The `sdg build` config to train on."})
    reward_embedder: str = field(
        default="Qwen/Qwen3-Embedding-0.6B",
        metadata={"help": "Description embedder of R_desc: a model id or folder, 'lexical' (offline) or 'none'."},
    )
    reward_embedder_device: str | None = field(
        default=None, metadata={"help": "Device for the embedder (default: this process's device)."}
    )


def world_size() -> int:
    """Processes in this job, as the launcher (accelerate, torchrun, deepspeed) announces them."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def parse(
    dataclass_types: tuple[type, ...], argv: list[str] | None = None, world: int | None = None
) -> tuple[Any, ...]:
    """Parse a recipe plus flags with trl's parser. With ``global_batch_size`` set, the accumulation steps for the
    world size (this job's, or ``world`` to plan another) are derived first and passed on as a flag, so every value
    trl derives from them (GRPO's generation batch and its divisibility check) follows."""

    argv = list(sys.argv[1:] if argv is None else argv)
    wanted = _peek(argv, dataclass_types, ("global_batch_size", "per_device_train_batch_size"))
    if wanted["global_batch_size"] is not None:
        accum = accumulation_for(int(wanted["global_batch_size"]), int(wanted["per_device_train_batch_size"]), world)
        argv = [*argv, "--gradient_accumulation_steps", str(accum)]
    return kebab_parser(dataclass_types).parse_args_and_config(argv)


def kebab_parser(dataclass_types: tuple[type, ...]) -> Any:
    """trl's parser with every flag shown kebab-case first (``--dataset-name``), as the rest of ``sdg`` writes
    them; the snake-case spelling (``--dataset_name``) and the YAML keys still work."""
    from trl import TrlParser

    parser = TrlParser(dataclass_types)
    for action in parser._actions:
        action.option_strings.sort(key=lambda s: (not s.startswith("--"), "_" in s))
    return parser


def _peek(argv: list[str], dataclass_types: tuple[type, ...], names: tuple[str, ...]) -> dict[str, Any]:
    """A few values as the full parse will see them (flag over recipe over dataclass default), read before it."""
    import argparse
    import dataclasses

    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--config")
    for n in names:
        ap.add_argument(f"--{n}")
    known, _ = ap.parse_known_args(argv)
    recipe: dict[str, Any] = {}
    if known.config:
        from sdg_data.config import load_yaml

        with open(known.config, encoding="utf-8") as f:
            recipe = load_yaml(f.read(), known.config) or {}
    out: dict[str, Any] = {}
    for n in names:
        value = getattr(known, n)
        if value is None:
            value = recipe.get(n)
        if value is None:
            for cls in dataclass_types:
                fields = {f.name: f for f in dataclasses.fields(cls)}
                if n in fields and fields[n].default is not dataclasses.MISSING:
                    value = fields[n].default
                    break
        out[n] = value
    return out


def accumulation_for(global_batch_size: int, per_device: int, world: int | None = None) -> int:
    ws = world or world_size()
    per_step = ws * per_device
    if global_batch_size % per_step:
        raise ValueError(
            f"global_batch_size {global_batch_size} is not a multiple of world size {ws} x "
            f"per_device_train_batch_size {per_device} = {per_step}"
        )
    return global_batch_size // per_step


def check_batch(training_args: Any, num_generations: int | None = None, world: int | None = None) -> dict:
    """What the batch came to, checked: for GRPO the generation batch must hold whole groups of completions."""
    ws = world or world_size()
    per_device = training_args.per_device_train_batch_size
    accum = training_args.gradient_accumulation_steps
    info = {"world_size": ws, "per_device_train_batch_size": per_device, "gradient_accumulation_steps": accum}
    info["global_batch"] = ws * per_device * accum
    if num_generations is not None:
        steps_per_generation = getattr(training_args, "steps_per_generation", None) or accum
        generation_batch = ws * per_device * steps_per_generation
        if generation_batch % num_generations:
            raise ValueError(
                f"the generation batch ({ws} processes x {per_device} per device x {steps_per_generation} steps per "
                f"generation = {generation_batch}) is not divisible by num_generations={num_generations}"
            )
        info["num_generations"] = num_generations
        info["prompts_per_generation"] = generation_batch // num_generations
    return info


def format_batch(info: dict) -> str:
    text = (
        f"global batch {info['global_batch']} = {info['world_size']} processes x "
        f"{info['per_device_train_batch_size']} per device x {info['gradient_accumulation_steps']} accumulation"
    )
    if "num_generations" in info:
        text += f" ({info['prompts_per_generation']} prompts x {info['num_generations']} generations per batch)"
    return text


def resume_point(training_args: Any) -> str | None:
    """The checkpoint to resume from: the one asked for, else the newest in output_dir (a restarted job goes on
    where it stopped instead of starting over)."""
    if training_args.resume_from_checkpoint:
        return training_args.resume_from_checkpoint
    from transformers.trainer_utils import get_last_checkpoint

    out = training_args.output_dir
    return get_last_checkpoint(out) if out and os.path.isdir(out) else None


def make_trainer(cls: Any, model: Any, processor: Any, training_args: Any, model_args: Any, **data: Any) -> Any:
    """A trl trainer over the detector with the recipe's arguments and LoRA (if the recipe asks for one)."""
    from trl import get_peft_config

    peft = get_peft_config(model_args)
    return cls(model=model, args=training_args, processing_class=processor, peft_config=peft, **data)


def train_and_save(trainer: Any, training_args: Any, log: Any) -> Any:
    """Train (resuming if a checkpoint is there), then save the model and its processor where the next stage and
    ``sdg detect`` load them."""
    state = trainer.accelerator.state
    log.info("distributed: %s, %d process(es)", state.distributed_type, state.num_processes)
    trainer.train(resume_from_checkpoint=resume_point(training_args))
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(training_args.output_dir)
    return trainer
