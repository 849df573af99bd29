"""``sdg distill`` settings: a dataclass filled from a YAML recipe, CLI flags override, unknown keys fail."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sdg_data.config import NonNegative, Positive
from sdg_data.io.api_client import Transport, transport_defaults


@dataclass
@transport_defaults(
    base_url="https://generativelanguage.googleapis.com/v1beta/openai/", max_retries=6, backoff_max_s=60.0
)
class DistillConfig(Transport):
    RECIPE_KIND = "distill"  # bundled recipes of this kind are found by name (sdg recipes)

    teacher: Literal["template", "openai"] = field(
        default="template",
        metadata={"help": "template (offline, deterministic) or openai (any OpenAI-compatible VLM endpoint)."},
    )
    model: str = field(default="gemini-3-pro-preview", metadata={"help": "teacher model name at that endpoint"})
    temperature: NonNegative = field(default=1.0, metadata={"help": "the teacher's sampling temperature"})
    max_tokens: Positive = field(default=4096, metadata={"help": "longest reply"})
    template: str = field(
        default="teacher_v1",
        metadata={"help": "teacher prompt: a name under distill/prompts/ or DIR/NAME ({system,user}.txt)"},
    )
    image_max_side: Positive = field(
        default=1024,
        metadata={"help": "the image is resized so its longer side is at most this, then sent as a data URL"},
    )
    image_format: Literal["png", "jpeg"] = field(
        default="jpeg", metadata={"help": "how the image is encoded for the request"}
    )
    min_words: Positive = field(default=18, metadata={"help": "shortest description the teacher may write"})
    max_words: Positive = field(default=45, metadata={"help": "longest description the teacher may write"})
    keep_annotator_importance: bool = field(
        default=True, metadata={"help": "keep the annotator's importance where there is one"}
    )
    max_attempts: Positive = field(
        default=5,
        metadata={"help": "replies that break the rules (moved / dropped boxes, bad think) before rejecting"},
    )
    usd_per_mtok_in: NonNegative = field(
        default=0.0, metadata={"help": "price per million prompt tokens, for the cost figure (0 = not tracked)"}
    )
    usd_per_mtok_out: NonNegative = field(default=0.0, metadata={"help": "price per million completion tokens"})
    cache_dir: str | None = field(
        default=None, metadata={"help": "finished work, so a rerun sends only what is missing; default OUT/cache"}
    )
    image_roots: list[str] | None = field(
        default=None,
        metadata={
            "flag": "--image-root",
            "help": "Folder that image_path may point into (repeatable). Default: the records file's folder.",
        },
    )
    max_input_chars: Positive = field(
        default=20_000,
        metadata={
            "help": (
                "Longest text a record may send the teacher (its caption and every box description): a longer "
                "record is rejected before a request is paid for (a 4 MB caption would be ~1M prompt tokens, "
                "re-sent on every retry)."
            )
        },
    )
    max_pixels: Positive = field(
        default=64 * 1024 * 1024, metadata={"help": "images whose header declares more are rejected"}
    )
    progress: bool = field(default=True, metadata={"cli": False, "help": "progress bars"})

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
