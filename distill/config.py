"""``sdg distill`` settings: a dataclass filled from a YAML recipe, CLI flags override, unknown keys fail."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sdg_data.config import Count, NonNegative, Positive, Seconds


@dataclass
class DistillConfig:
    teacher: Literal["template", "openai"] = "template"
    """template (offline, deterministic) or openai (any OpenAI-compatible VLM endpoint)."""
    base_url: str = "https://generativelanguage.googleapis.com/v1beta/openai/"  # chat-completions endpoint base URL
    model: str = "gemini-3-pro-preview"  # teacher model name at that endpoint
    api_key_env: str = "OPENAI_API_KEY"  # name of the variable holding the key; the key itself is never logged
    temperature: NonNegative = 1.0  # the teacher's sampling temperature
    max_tokens: Positive = 4096  # longest reply
    template: str = "teacher_v1"  # teacher prompt: a name under distill/prompts/ or DIR/NAME ({system,user}.txt)
    image_max_side: Positive = 1024  # the image is resized so its longer side is at most this, then sent as a data URL
    image_format: Literal["png", "jpeg"] = "jpeg"  # how the image is encoded for the request
    min_words: Positive = 18  # shortest description the teacher may write
    max_words: Positive = 45  # longest description the teacher may write
    keep_annotator_importance: bool = True  # keep the annotator's importance where there is one
    max_in_flight: Positive = 16  # requests in flight
    timeout_s: Seconds = 120.0  # per request
    max_retries: Count = 6  # transient failures (429, 5xx, timeouts, broken replies) per attempt
    backoff_base_s: NonNegative = 1.0  # first retry wait (doubles, with jitter)
    backoff_max_s: NonNegative = 60.0  # longest retry wait
    max_attempts: Positive = 5  # replies that break the rules (moved / dropped boxes, bad think) before rejecting
    usd_per_mtok_in: NonNegative = 0.0  # price per million prompt tokens, for the cost figure (0 = not tracked)
    usd_per_mtok_out: NonNegative = 0.0  # price per million completion tokens
    cache_dir: str | None = None  # finished work, so a rerun sends only what is missing; default OUT/cache
    image_roots: list[str] | None = field(default=None, metadata={"flag": "--image-root"})
    """Folder that image_path may point into (repeatable). Default: the records file's folder."""
    max_pixels: Positive = 64 * 1024 * 1024  # images whose header declares more are rejected
    progress: bool = field(default=True, metadata={"cli": False})  # progress bars

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
