"""train: the SDG detector's SFT and GRPO scripts (trl), their launch configs, and detector inference.

* ``train/sft.py``, ``train/grpo.py``: thin trl scripts; ``python train/sft.py --config train/recipes/sft/...yaml``,
  ``sdg train sft --config ...`` (the same parser), or ``sdg train sft --accelerate-config LAUNCH.yaml ...``.
* ``train/detect.py``: ``sdg detect``, a detector (local transformers or an OpenAI-compatible server) over images.
* ``train/cli.py``: the stage's commands, registered with ``sdg`` through the ``sdg.commands`` entry point.
* ``train/launch/``: accelerate + DeepSpeed configs and the Slurm script for 1 x 8 and 2 x 8 GPUs.
"""
