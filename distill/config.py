"""``sdg distill`` settings: a dataclass filled from a YAML recipe, CLI flags override, unknown keys fail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class DistillConfig:
    # which teacher: the offline deterministic template writer, or a VLM behind an OpenAI-compatible API
    teacher: Literal["template", "openai"] = "template"
    base_url: str = "https://generativelanguage.googleapis.com/v1beta/openai/"
    model: str = "gemini-3-pro-preview"
    api_key_env: str = "OPENAI_API_KEY"  # name of the variable holding the key; the key itself is never logged
    temperature: float = 1.0
    max_tokens: int = 4096
    # prompt templates: distill/prompts/<template>.{system,user}.txt, or a path prefix to your own pair
    template: str = "teacher_v1"
    image_max_side: int = 1024  # the image is resized so its longer side is at most this, then sent as a data URL
    image_format: Literal["png", "jpeg"] = "jpeg"
    # what the teacher must produce
    min_words: int = 18
    max_words: int = 45
    keep_annotator_importance: bool = True
    # transport
    max_in_flight: int = 16
    timeout_s: float = 120.0
    max_retries: int = 6  # transient failures (429, 5xx, timeouts, broken replies) per attempt
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    max_attempts: int = 5  # replies that break the rules (moved / dropped boxes, bad think) before rejecting
    # accounting (USD per million tokens; 0 = not tracked)
    usd_per_mtok_in: float = 0.0
    usd_per_mtok_out: float = 0.0
    # where finished work is kept so a rerun after a crash sends only what is missing
    cache_dir: str | None = None  # default: <out>/cache
    # images are untrusted: they must lie inside these folders (default: the records file's folder) and decode
    image_roots: list[str] | None = None
    max_pixels: int = 64 * 1024 * 1024
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("max_in_flight", "max_attempts", "image_max_side", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"DistillConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_retries < 0:
            raise ValueError(f"DistillConfig.max_retries must be >= 0, got {self.max_retries}")
        if not 0 < self.min_words <= self.max_words:
            raise ValueError(f"DistillConfig needs 0 < min_words <= max_words, got {self.min_words}, {self.max_words}")
        if self.timeout_s <= 0:
            raise ValueError(f"DistillConfig.timeout_s must be > 0, got {self.timeout_s}")
