"""scoring: SDG-Eval (``evaluation``), COCO and joint AP (``ap``), the GRPO reward (``reward``), image-level
metrics (``image_level``), the description embedders both use (``embedding``) and a run's boxes as columns that
SDG-Eval and AP share (``table``); ``cli``: eval, reward, compare, eval-image-level."""
