"""train: the models that use SDG data, one folder per model line.

* ``train/detector/``: the SDG detector (Qwen3-VL): ``sft.py`` and ``grpo.py`` (thin trl scripts, the same parser
  as ``sdg train sft|grpo``), ``args.py``, ``data.py``, ``modeling.py``; and ``detect.py`` (``sdg detect``: the
  trained detector, local or behind an OpenAI-compatible server, over images).
* ``train/boxflow/``: BoxFlow-GRPO, a text-to-image model aligned with the detector's boxes: ``trainer.py``,
  ``config.py``, ``rewards.py``, ``advantages.py``, ``flow_models.py``, ``sde.py``, and ``lora_eval.py``
  (``sdg eval-lora``).
* ``train/refine.py``: ``sdg refine``, an application of the detector's output (edit the defects away), not
  training.
* ``train/cli.py`` (the stage's commands, registered through the ``sdg.commands`` entry point), ``recipes/``,
  ``launch/`` (accelerate + DeepSpeed configs and the Slurm script), ``prompts/``.
"""
