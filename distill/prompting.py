"""Teacher prompts: load a versioned template pair, fill it with one record's facts, build the chat messages."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.config import DistillConfig
from sdg_data.records import ImageRecord


PROMPTS = Path(__file__).parent / "prompts"
FACTS_OPEN, FACTS_CLOSE = "```json\n", "\n```"


@dataclass(frozen=True)
class TeacherTemplate:
    name: str
    system: str
    user: str

    @property
    def version(self) -> str:
        """Name plus a hash of both texts: editing a template changes the cache key of every request."""
        digest = hashlib.sha256((self.system + "\x00" + self.user).encode()).hexdigest()[:12]
        return f"{self.name}@{digest}"

    @classmethod
    def load(cls, template: str) -> TeacherTemplate:
        """``template`` is a name under distill/prompts/ or a path prefix ``DIR/NAME`` of your own pair."""
        prefix = Path(template) if ("/" in template or "\\" in template) else PROMPTS / template
        files = [prefix.parent / f"{prefix.name}.{part}.txt" for part in ("system", "user")]
        for f in files:
            if not f.exists():
                raise FileNotFoundError(f"teacher template {template!r}: {f} not found")
        return cls(prefix.name, files[0].read_text(encoding="utf-8"), files[1].read_text(encoding="utf-8"))


def _fill(text: str, values: dict[str, Any]) -> str:
    """Substitute ``{name}`` for known names only, so JSON braces in a template need no escaping."""
    for k, v in values.items():
        text = text.replace("{" + k + "}", str(v))
    return text


def facts(record: ImageRecord) -> list[dict[str, Any]]:
    """The human annotation as the teacher sees it: fixed boxes and labels, the annotator's note and importance."""
    out = []
    for d in record.defects:
        item: dict[str, Any] = {"box_2d": d.box.to_grid(), "label": d.label, "annotator_note": d.description}
        if d.importance is not None:
            item["annotator_importance"] = d.importance
        out.append(item)
    return out


def annotation_hash(record: ImageRecord) -> str:
    """What the teacher is told about one image; part of the cache key, so a corrected annotation is resent."""
    blob = json.dumps([record.caption, record.width, record.height, facts(record)], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def system_text(tpl: TeacherTemplate, cfg: DistillConfig) -> str:
    keep = " Where an annotator gave an importance, keep that number." if cfg.keep_annotator_importance else ""
    return _fill(tpl.system, {"min_words": cfg.min_words, "max_words": cfg.max_words, "keep_rule": keep})


def user_text(tpl: TeacherTemplate, record: ImageRecord) -> str:
    return _fill(
        tpl.user,
        {
            "caption": record.caption or "",
            "width": record.width or "?",
            "height": record.height or "?",
            "facts_json": json.dumps(facts(record), ensure_ascii=False, indent=1),
        },
    )


def read_facts(text: str) -> list[dict[str, Any]]:
    """The facts block back out of a user text (the loopback test server answers from it)."""
    start = text.index(FACTS_OPEN) + len(FACTS_OPEN)
    return json.loads(text[start : text.index(FACTS_CLOSE, start)])


def teacher_messages(tpl: TeacherTemplate, cfg: DistillConfig, record: ImageRecord, image_url: str) -> list[dict]:
    return [
        {"role": "system", "content": system_text(tpl, cfg)},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_url}},
                {"type": "text", "text": user_text(tpl, record)},
            ],
        },
    ]
