"""scoring: SDG-Eval (``evaluation``), COCO and joint AP (``ap``), the GRPO reward (``reward``), image-level
metrics (``image_level``) and the description embedders both use (``embedding``); ``cli``: eval, reward, compare,
eval-image-level."""
