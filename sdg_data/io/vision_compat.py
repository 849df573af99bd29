"""Loading Qwen-VL processors where torchvision is missing (our CPU machines).

The Qwen2-VL / Qwen3-VL processors insist on a video processor, which needs torchvision; the SDG detector and
LongCat's prompt rewriter only use images. ``image_only(cls)`` is the same processor without the video half,
saved under the stock class name so a folder written here loads with ``AutoProcessor`` anywhere.
"""

from __future__ import annotations

import importlib.util
from functools import cache


@cache
def has_torchvision() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision  # noqa: F401
    except Exception:  # a torchvision built for another torch fails at import (operator torchvision::nms ...)
        return False
    return True


@cache
def image_only(processor_cls: type) -> type:
    """``processor_cls`` (a transformers processor with image, tokenizer and video parts) minus the video part."""

    class ImageOnly(processor_cls):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(
                image_processor=image_processor,
                tokenizer=tokenizer,
                video_processor=None,
                chat_template=chat_template,
                **kwargs,
            )

        def to_dict(self, *args, **kwargs):
            out = super().to_dict(*args, **kwargs)
            out["processor_class"] = processor_cls.__name__
            return out

    ImageOnly.__name__ = ImageOnly.__qualname__ = processor_cls.__name__
    ImageOnly.__module__ = "transformers"
    return ImageOnly
