"""Detector SFT: full fine-tune of Qwen3-VL on the ``sft`` config of an ``sdg build`` dataset, vision encoder frozen,
loss on the assistant's response only.

    accelerate launch --config_file train/launch/zero2_1x8.yaml train/detector/sft.py \\
        --config sft/qwen3_vl_4b_sdg30k --dataset_name outputs/sdg30k
    python train/detector/sft.py --config ... --output_dir ...     # one process; flags override the recipe
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path


if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from train.detector.args import (  # noqa: E402
    SDGScriptArguments,
    check_batch,
    format_batch,
    make_trainer,
    parse,
    train_and_save,
)


logger = logging.getLogger("sdg.train.sft")


def build_trainer(script_args, training_args, model_args):
    from trl import SFTTrainer

    from train.detector.data import sft_dataset
    from train.detector.modeling import load_for_training

    model, processor = load_for_training(script_args, model_args)
    train = sft_dataset(
        script_args.dataset_name,
        script_args.dataset_config or "sft",
        script_args.dataset_train_split,
        script_args.max_train_samples,
    )
    evaluation = None
    if script_args.dataset_test_split:
        evaluation = sft_dataset(
            script_args.dataset_name, script_args.dataset_config or "sft", script_args.dataset_test_split
        )
    return make_trainer(SFTTrainer, model, processor, training_args, model_args, train_dataset=train,
                        eval_dataset=evaluation)  # fmt: skip


def main(argv: list[str] | None = None):
    from trl import ModelConfig, SFTConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    script_args, training_args, model_args = parse((SDGScriptArguments, SFTConfig, ModelConfig), argv)
    info = check_batch(training_args)
    logger.info(format_batch(info))
    trainer = build_trainer(script_args, training_args, model_args)
    return train_and_save(trainer, training_args, logger)


if __name__ == "__main__":
    main()
