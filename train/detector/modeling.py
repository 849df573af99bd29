"""Loading the detector (a Qwen3-VL checkpoint) and its processor the same way for SFT, GRPO and ``sdg detect``.

Two things differ from a plain ``AutoProcessor.from_pretrained``:

* the Qwen3-VL processor insists on a video processor, which needs torchvision; where torchvision is missing (our
  CPU machines) we load an image-only subclass, which is all the detector uses;
* the image resolution bounds of the recipe (``min_pixels`` / ``max_pixels``, the paper's MIN_PIXELS / MAX_PIXELS)
  are applied to the image processor here, once, so training and inference see images at the same size.
"""

from __future__ import annotations

import logging
from typing import Any

from sdg_data.io.vision_compat import has_torchvision, image_only


logger = logging.getLogger(__name__)


def image_only_processor_class():
    """Qwen3-VL's processor without the video half (whose processor needs torchvision)."""
    from transformers import Qwen3VLProcessor

    return image_only(Qwen3VLProcessor)


def set_pixel_bounds(processor: Any, min_pixels: int | None, max_pixels: int | None) -> None:
    """Clamp the number of image pixels the processor keeps (it resizes, keeping the aspect, to a multiple of the
    patch grid). None leaves the checkpoint's own bound."""
    ip = processor.image_processor
    size = dict(getattr(ip, "size", None) or {})
    if min_pixels is not None:
        size["shortest_edge"] = int(min_pixels)
        if hasattr(ip, "min_pixels"):
            ip.min_pixels = int(min_pixels)
    if max_pixels is not None:
        size["longest_edge"] = int(max_pixels)
        if hasattr(ip, "max_pixels"):
            ip.max_pixels = int(max_pixels)
    if min_pixels is not None and max_pixels is not None and min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) is larger than max_pixels ({max_pixels})")
    ip.size = size


def load_processor(
    name_or_path: str,
    *,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    revision: str | None = None,
    padding_side: str | None = None,
) -> Any:
    """The checkpoint's processor, image-only where torchvision is unavailable, with the recipe's pixel bounds."""
    from transformers import AutoProcessor, ProcessorMixin

    kwargs: dict[str, Any] = {"revision": revision} if revision else {}
    proc = None
    if has_torchvision():
        proc = AutoProcessor.from_pretrained(name_or_path, **kwargs)
        if not isinstance(proc, ProcessorMixin):
            proc = None
    if proc is None:
        # transformers falls back to the PIL image processor by itself when torchvision is missing; a backend
        # argument here would reach the tokenizer too and make it look slow to the chat-template code
        proc = image_only_processor_class().from_pretrained(name_or_path, **kwargs)
    set_pixel_bounds(proc, min_pixels, max_pixels)
    if padding_side is not None:
        proc.tokenizer.padding_side = padding_side
    return proc


def torch_dtype(name: str | None):
    import torch

    if name in (None, "auto"):
        return "auto"
    table = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    table.update({"float32": torch.float32, "fp32": torch.float32})
    if name not in table:
        raise ValueError(f"dtype must be one of {sorted(table)} or auto, got {name!r}")
    return table[name]


def load_model(
    name_or_path: str,
    *,
    dtype: str | None = "auto",
    revision: str | None = None,
    attn_implementation: str | None = None,
    device_map: Any = None,
):
    """The detector as ``AutoModelForImageTextToText`` (Qwen3VLForConditionalGeneration for Qwen3-VL); a model id
    that is not cached fails in seconds (:func:`sdg_data.io.hub.require_model`)."""
    from transformers import AutoModelForImageTextToText

    from sdg_data.io.hub import require_model

    require_model(name_or_path, "--model-name-or-path (or --model)", "model")

    kwargs: dict[str, Any] = {"dtype": torch_dtype(dtype)}
    if revision:
        kwargs["revision"] = revision
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        kwargs["device_map"] = device_map
    return AutoModelForImageTextToText.from_pretrained(name_or_path, **kwargs)


def vision_modules(model: Any) -> list[Any]:
    """The vision tower (and its merger): what the paper's ``freeze_vit`` freezes."""
    inner = getattr(model, "model", model)
    found = [m for m in (getattr(inner, "visual", None), getattr(model, "visual", None)) if m is not None]
    if not found:
        raise ValueError(f"{type(model).__name__} has no vision tower ('visual') to freeze")
    return found[:1]


def freeze_vision(model: Any) -> int:
    """Freeze the vision encoder; returns how many parameters were frozen."""
    n = 0
    for module in vision_modules(model):
        for p in module.parameters():
            if p.requires_grad:
                p.requires_grad_(False)
                n += p.numel()
    return n


def count_parameters(model: Any) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def load_for_training(script_args: Any, model_args: Any, padding_side: str | None = None) -> tuple[Any, Any]:
    """(model, processor) as SFT and GRPO both start: the recipe's pixel bounds, dtype and attention, the vision
    encoder frozen if asked; the parameter counts are logged."""
    processor = load_processor(
        model_args.model_name_or_path,
        min_pixels=script_args.min_pixels,
        max_pixels=script_args.max_pixels,
        revision=model_args.model_revision,
        padding_side=padding_side,
    )
    model = load_model(
        model_args.model_name_or_path,
        dtype=model_args.dtype,
        revision=model_args.model_revision,
        attn_implementation=model_args.attn_implementation,
    )
    if script_args.freeze_vision:
        logger.info("froze the vision encoder: %s parameters", f"{freeze_vision(model):,}")
    total, trainable = count_parameters(model)
    logger.info("parameters: %s total, %s trainable", f"{total:,}", f"{trainable:,}")
    return model, processor
