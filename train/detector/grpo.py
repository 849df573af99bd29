"""Detector GRPO: from the SFT checkpoint, sample groups of answers per image and reward them with the SDG reward
(format gate, DIoU boxes, description cosine, importance) against the ``grpo`` config's ground truth.

    accelerate launch --config_file train/launch/zero2_2x8.yaml train/detector/grpo.py \\
        --config grpo/qwen3_vl_4b_sdg30k --model_name_or_path outputs/sft --dataset_name DIR

Logged besides trl's own metrics (reward mean/std, ``frac_reward_zero_std``: the share of groups whose rewards are
all equal, which carry no gradient): ``sdg/r_box``, ``sdg/r_desc``, ``sdg/r_imp``, ``sdg/format_fail_rate`` and the
mix of reward cases.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path


if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from train.detector.args import (  # noqa: E402
    SDGGRPOScriptArguments,
    check_batch,
    format_batch,
    make_trainer,
    parse,
    train_and_save,
)


logger = logging.getLogger("sdg.train.grpo")


def build_reward(script_args, reward_cfg=None, device: str | None = None):
    """The core reward with the recipe's embedder and constants (RewardConfig, parsed with the rest)."""
    from sdg_data.scoring.embedding import load_embedder
    from sdg_data.scoring.reward import RewardConfig, SDGReward

    cfg = reward_cfg or RewardConfig()
    spec = script_args.reward_embedder
    kwargs = {}
    if spec not in ("none", "lexical"):
        kwargs["device"] = script_args.reward_embedder_device or device
    embedder = load_embedder(spec, **{k: v for k, v in kwargs.items() if v})
    return SDGReward(embedder=embedder, config=cfg)


def build_trainer(script_args, training_args, model_args, reward_cfg=None):
    from trl import GRPOTrainer

    from train.detector.data import grpo_dataset
    from train.detector.modeling import load_for_training

    model, processor = load_for_training(script_args, model_args, padding_side="left")
    train = grpo_dataset(
        script_args.dataset_name,
        script_args.dataset_config or "grpo",
        script_args.dataset_train_split,
        script_args.max_train_samples,
    )
    device = "cpu" if training_args.use_cpu else None
    reward = build_reward(script_args, reward_cfg, device=device)
    return make_trainer(GRPOTrainer, model, processor, training_args, model_args, train_dataset=train,
                        reward_funcs=[reward])  # fmt: skip


def main(argv: list[str] | None = None):
    from trl import GRPOConfig, ModelConfig

    from sdg_data.scoring.reward import RewardConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # the reward's weights and constants are recipe keys and flags like every other training argument
    script_args, training_args, model_args, reward_cfg = parse(
        (SDGGRPOScriptArguments, GRPOConfig, ModelConfig, RewardConfig), argv
    )
    info = check_batch(training_args, num_generations=training_args.num_generations)
    logger.info(format_batch(info))
    trainer = build_trainer(script_args, training_args, model_args, reward_cfg)
    return train_and_save(trainer, training_args, logger)


if __name__ == "__main__":
    main()
