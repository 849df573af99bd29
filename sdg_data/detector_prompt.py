"""The detector's conversation: one system turn, one user turn (the image, then the caption prompt).

The same messages feed SFT (with the assistant's response appended), GRPO (as the prompt) and inference, so they
are built here once. The template is a file (``{caption}`` placeholder) that a user can replace with the
authors' exact wording to match the released checkpoints.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any


SYSTEM_PROMPT = "You are a helpful assistant."
TEMPLATES = Path(__file__).parent / "prompts"
DEFAULT_TEMPLATE = TEMPLATES / "detector_v1.txt"


@lru_cache(maxsize=8)
def _load(path: str) -> str:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"prompt template {p}: no such file")
    text = p.read_text(encoding="utf-8")
    if "{caption}" not in text:
        raise ValueError(f"prompt template {p}: has no {{caption}} placeholder")
    return text


def template_text(path: str | Path | None = None) -> str:
    return _load(str(path or DEFAULT_TEMPLATE))


def template_id(path: str | Path | None = None) -> str:
    """File name plus content hash, recorded in provenance so a dataset says which wording it was built with."""
    p = Path(path or DEFAULT_TEMPLATE)
    return f"{p.name}@{hashlib.sha256(template_text(p).encode()).hexdigest()[:12]}"


def user_text(caption: str, path: str | Path | None = None) -> str:
    """The user turn's text. ``str.format`` does not re-read braces inside the caption, so any caption is safe."""
    return template_text(path).format(caption=caption)


def conversation(
    caption: str, path: str | Path | None = None, image: Any = None, flat_system: bool = False
) -> list[dict[str, Any]]:
    """The detector's conversation, the one builder for training rows, local inference and served inference.

    ``image``: None gives trl's placeholder block (filled from a dataset row's ``images`` column); a PIL image is
    put inline (transformers' chat template); a string is an image URL or data URL (OpenAI-compatible servers,
    which also want the system turn as plain text: ``flat_system``)."""
    if image is None:
        block: dict[str, Any] = {"type": "image", "text": None}
    elif isinstance(image, str):
        block = {"type": "image_url", "image_url": {"url": image}}
    else:
        block = {"type": "image", "image": image}
    system: Any = SYSTEM_PROMPT if flat_system else [{"type": "text", "text": SYSTEM_PROMPT}]
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": [block, {"type": "text", "text": user_text(caption, path)}]},
    ]


def prompt_messages(caption: str, path: str | Path | None = None) -> list[dict[str, Any]]:
    """trl's conversational multimodal form: content blocks, the image as a ``{"type": "image"}`` placeholder
    filled from the row's ``images`` column."""
    return conversation(caption, path)


def sft_messages(caption: str, response: str, path: str | Path | None = None) -> list[dict[str, Any]]:
    return [*prompt_messages(caption, path), {"role": "assistant", "content": [{"type": "text", "text": response}]}]
