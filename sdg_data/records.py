"""The data contract: one record per defect, one record per image, and their JSON form.

Every stage reads and writes :class:`ImageRecord`. Its JSON line is a superset of the CLI interchange form
``{"image_id": ..., "defects": [{"box_2d": [x0, y0, x1, y1], "label", "description", "importance"}]}`` (0-1000
grid, xyxy), so a file of full records is also a valid ``--gt`` / ``--pred`` file. Validation errors name the
record, the field and the reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sdg_data import SCHEMA_VERSION
from sdg_data.boxes import Box, BoxError, BoxOrder


LABELS: tuple[str, ...] = ("artifact", "misalignment")
"""The two top-level defect types; subtypes live in the annotation guidelines only."""

SPLITS: tuple[str, ...] = ("train", "test")
IMPORTANCE_MIN, IMPORTANCE_MAX = 1, 100
MAX_DEFECTS = 1000  # per record: SDG-30K images have a handful; past this it is a flood, and scoring is quadratic
MAX_DESCRIPTION_CHARS = 2000  # a description is a sentence or two (the teacher writes 18-45 words)
# the other text fields, bounded so one record cannot cost a stage minutes or gigabytes (a 10 MB generator name
# drawn into a plot, a 3 MB id written into every report)
MAX_TEXT_CHARS = {"image_id": 512, "generator": 256, "caption": 20_000, "image_path": 4096, "think": 200_000}

_RECORD_KEYS = {
    "schema_version",
    "image_id",
    "image_path",
    "width",
    "height",
    "caption",
    "generator",
    "seed",
    "split",
    "defects",
    "provenance",
    "think",
}
_DEFECT_KEYS = {"box_2d", "box_px", "label", "description", "desc", "importance", "provenance"}


_WORD = re.compile(r"[A-Za-z0-9'’-]+|[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


def has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (valid in a JSON escape, not as UTF-8: it cannot be written)."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def bad_value(obj: Any, numbers: bool = False) -> tuple[str, str] | None:
    """The field path and reason of the first value JSON should not hold: a string (or key) with a lone surrogate,
    or (``numbers``) a NaN / Infinity (Python's json reads them; no other JSON reader does). Iterative: the object
    may be deep. Keys in the path are escaped, so the path itself prints anywhere. The line reader uses the
    text form; the record checks use the ``numbers`` form on provenance, which nothing else checks."""
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, str):
            if has_surrogate(v):
                return where or "<line>", "holds a lone surrogate (text must be valid Unicode)"
        elif isinstance(v, float) and numbers:
            if not math.isfinite(v):
                token = "NaN" if v != v else "Infinity" if v > 0 else "-Infinity"
                return where or "<line>", f"is {token}, which is not a JSON number (write null or a finite number)"
        elif isinstance(v, dict):
            for k, x in v.items():
                key = str(k).encode("utf-8", "backslashreplace").decode("utf-8")
                sub = f"{where}.{key}" if where else key
                if isinstance(k, str) and has_surrogate(k):
                    return sub, "holds a lone surrogate (text must be valid Unicode)"
                stack.append((sub, x))
        elif isinstance(v, list):
            stack.extend((f"{where}[{i}]", x) for i, x in enumerate(v))
    return None


def clean_text(text: str) -> str:
    """Text safe to embed, tokenize and write as UTF-8: lone surrogates become U+FFFD."""
    if not has_surrogate(text):
        return text
    return "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)


def count_words(text: str) -> int:
    """Words of a description as a reader counts them: Latin-script words, and each CJK character as one."""
    return len(_WORD.findall(text))


MAX_SIDE = 1 << 16  # pixels; larger sizes are a data error, not an image
_I64 = -(1 << 63)


def is_id(value: Any) -> bool:
    """Whether a value from outside can serve as an id: an int or a string (not a bool, not a list)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def short_repr(value: Any, limit: int = 40) -> str:
    """``repr`` for an error message, cut short (a 400-digit integer or a long list stays readable)."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


class RecordError(ValueError):
    """Invalid record content. ``str()`` reads: record 'ID' field 'F': reason."""

    def __init__(self, record_id: str | None, field_name: str, reason: str):
        self.record_id = record_id
        self.field = field_name
        self.reason = reason
        rid = "?" if record_id is None else record_id
        super().__init__(f"record {short_repr(rid, 200)} field {field_name!r}: {reason}")


def check_importance(value: Any) -> int | None:
    """An importance as stored: None, or an integer 1-100. Raises ValueError with the reason otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be an integer 1-100 or null, got {short_repr(value)}")
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        raise ValueError(f"must be an integer 1-100 or null, got {short_repr(value)}")
    v = int(value)
    if not IMPORTANCE_MIN <= v <= IMPORTANCE_MAX:
        raise ValueError(f"must be within {IMPORTANCE_MIN}-{IMPORTANCE_MAX}, got {short_repr(v)}")
    return v


@dataclass(slots=True)
class Defect:
    """One defect: where (box), what (label), why (description) and how much it matters (importance or None)."""

    box: Box
    label: str
    description: str = ""
    importance: int | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def validate(self, record_id: str | None = None, where: str = "defect", importance: bool = True) -> None:
        """Raise :class:`RecordError` on the first bad field; ``importance=False`` when the caller has just
        checked it (the reader converts it as it checks)."""
        if self.label not in LABELS:
            raise RecordError(record_id, f"{where}.label", f"must be one of {LABELS}, got {self.label!r}")
        problem = self.box.problem()
        if problem:
            raise RecordError(record_id, f"{where}.box_2d", problem)
        if not isinstance(self.description, str):
            raise RecordError(record_id, f"{where}.description", "must be a string")
        if not self.description.strip():
            raise RecordError(record_id, f"{where}.description", "is empty (every box needs a description)")
        if len(self.description) > MAX_DESCRIPTION_CHARS:
            raise RecordError(
                record_id,
                f"{where}.description",
                f"{len(self.description)} characters, more than {MAX_DESCRIPTION_CHARS}",
            )
        if importance:
            try:
                check_importance(self.importance)
            except ValueError as exc:
                raise RecordError(record_id, f"{where}.importance", str(exc)) from None

    def to_json(self, width: int | None = None, height: int | None = None) -> dict[str, Any]:
        """Interchange form. With the image size, ``box_px`` (pixel xyxy, derived, ignored on read) is added."""
        out: dict[str, Any] = {
            "box_2d": self.box.to_grid(),
            "label": self.label,
            "description": self.description,
            "importance": self.importance,
        }
        if width and height:
            out["box_px"] = [round(v, 2) for v in self.box.to_pixels(width, height)]
        if self.provenance:
            out["provenance"] = self.provenance
        return out

    @classmethod
    def from_json(
        cls, obj: Any, record_id: str | None = None, where: str = "defect", order: BoxOrder = "xyxy"
    ) -> Defect:
        """Parse and validate one interchange defect; ``desc`` is accepted for ``description``."""
        if not isinstance(obj, Mapping):
            raise RecordError(record_id, where, f"must be an object, got {type(obj).__name__}")
        if not _DEFECT_KEYS.issuperset(obj):
            raise RecordError(record_id, where, f"unknown keys {sorted(set(obj) - _DEFECT_KEYS)}")
        if "box_2d" not in obj:
            raise RecordError(record_id, f"{where}.box_2d", "missing")
        try:
            box = Box.from_grid(obj["box_2d"], order=order)
        except BoxError as exc:
            raise RecordError(record_id, f"{where}.box_2d", str(exc)) from None
        label = obj.get("label")
        if label is None:
            raise RecordError(record_id, f"{where}.label", "missing")
        description = obj.get("description", obj.get("desc", ""))
        if description is None:
            description = ""
        try:
            importance = check_importance(obj.get("importance"))
        except ValueError as exc:
            raise RecordError(record_id, f"{where}.importance", str(exc)) from None
        prov = obj.get("provenance") or {}
        if not isinstance(prov, Mapping):
            raise RecordError(record_id, f"{where}.provenance", "must be an object")
        if prov and (bad := bad_value(prov, numbers=True)) is not None:
            raise RecordError(record_id, f"{where}.provenance.{bad[0]}", bad[1])
        d = cls(box=box, label=label, description=description, importance=importance, provenance=dict(prov))
        d.validate(record_id, where, importance=False)  # checked and converted above
        return d


@dataclass(slots=True)
class ImageRecord:
    """One generated image and its defects. An annotated record with ``defects == []`` is a clean image (a kept
    negative); a record that nobody has annotated yet (``annotated=False``, ``"defects": null`` in JSON) is not
    clean, it is unknown, and every stage that needs a verdict on the image refuses it (:meth:`require_annotated`).

    Only ``image_id`` is required: scoring files carry it and ``defects``; the dataset stages fill the rest and
    check it with :meth:`require`.
    """

    image_id: str
    defects: list[Defect] = field(default_factory=list)
    image_path: str | None = None
    width: int | None = None
    height: int | None = None
    caption: str | None = None
    generator: str | None = None
    seed: int | None = None
    split: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    schema_version: str = SCHEMA_VERSION
    think: str | None = None  # the distilled reasoning (``<think>`` body) that precedes the answer
    annotated: bool = True  # False: nobody has looked for defects yet (``"defects": null``); never "clean"
    old_form: bool = field(default=False, compare=False, repr=False)  # read from the schema 1.1 marker (see from_json)

    def defects_of(self, label: str) -> list[Defect]:
        return [d for d in self.defects if d.label == label]

    def validate(self, defects: bool = True) -> None:
        """Raise :class:`RecordError` on the first bad field; ``defects=False`` checks the record's own fields only
        (the reader has checked each defect as it parsed it)."""
        rid = self.image_id
        if not isinstance(rid, str) or not rid:
            raise RecordError(None, "image_id", f"must be a non-empty string, got {short_repr(rid)}")
        for name in ("width", "height"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= MAX_SIDE):
                raise RecordError(rid, name, f"must be a positive integer up to {MAX_SIDE}, got {short_repr(v)}")
        seed = self.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not _I64 <= seed < -_I64):
            raise RecordError(rid, "seed", f"must be a 64-bit signed integer, got {short_repr(seed)}")
        if self.split is not None and self.split not in SPLITS:
            raise RecordError(rid, "split", f"must be one of {SPLITS}, got {self.split!r}")
        for name in ("image_path", "caption", "generator", "think"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise RecordError(rid, name, f"must be a string, got {type(v).__name__}")
        for name, most in MAX_TEXT_CHARS.items():
            v = getattr(self, name)
            if isinstance(v, str) and len(v) > most:
                raise RecordError(rid if name != "image_id" else short_repr(rid), name,
                                  f"{len(v)} characters, more than {most}")  # fmt: skip
        if not isinstance(self.defects, list):
            raise RecordError(rid, "defects", "must be a list (empty for a clean image)")
        if not self.annotated and self.defects:
            raise RecordError(rid, "defects", "a record that is not annotated cannot hold defects")
        for i, d in enumerate(self.defects if defects else ()):
            d.validate(rid, f"defects[{i}]")

    def require_annotated(self) -> None:
        """Raise unless the record has been annotated: distill, build and every ground truth need a verdict, and
        an image nobody looked at is not a clean one."""
        if not self.annotated:
            raise RecordError(
                self.image_id,
                "defects",
                "not annotated yet (null): annotate it first (sdg annotate), or write [] "
                "if a person checked it and found it clean",
            )

    def require(self, *names: str) -> None:
        """Raise unless every named field is set: stages that need an image, a caption or a split call this."""
        for name in names:
            if getattr(self, name) is None:
                raise RecordError(self.image_id, name, "missing (required by this stage)")

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "image_id": self.image_id,
            "image_path": self.image_path,
            "width": self.width,
            "height": self.height,
            "caption": self.caption,
            "generator": self.generator,
            "seed": self.seed,
            "split": self.split,
            "defects": [d.to_json(self.width, self.height) for d in self.defects] if self.annotated else None,
            "provenance": self.provenance,
            **({"think": self.think} if self.think is not None else {}),
        }

    @classmethod
    def from_json(cls, obj: Any, order: BoxOrder = "xyxy") -> ImageRecord:
        """Parse and validate a record line (full record or the minimal interchange form)."""
        if not isinstance(obj, Mapping):
            raise RecordError(None, "<line>", f"must be a JSON object, got {type(obj).__name__}")
        rid = obj.get("image_id")
        if not isinstance(rid, str) or not rid:
            raise RecordError(None, "image_id", f"must be a non-empty string, got {short_repr(rid)}")
        if not _RECORD_KEYS.issuperset(obj):
            raise RecordError(rid, "<record>", f"unknown keys {sorted(set(obj) - _RECORD_KEYS)}")
        version = obj.get("schema_version") or SCHEMA_VERSION
        if not isinstance(version, str) or version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise RecordError(rid, "schema_version", f"{short_repr(version)} is not compatible with {SCHEMA_VERSION}")
        raw = obj.get("defects")
        annotated = raw is not None  # absent or null: not annotated yet; [] is a verdict, "clean"
        if annotated and not isinstance(raw, list):
            raise RecordError(rid, "defects", f"must be a list, or null when not annotated, got {type(raw).__name__}")
        if raw and len(raw) > MAX_DEFECTS:
            raise RecordError(
                rid, "defects", f"holds {len(raw)} defects, more than the {MAX_DEFECTS} a record may hold"
            )
        defects = [Defect.from_json(d, rid, f"defects[{i}]", order) for i, d in enumerate(raw or ())]
        prov = obj.get("provenance") or {}
        if not isinstance(prov, Mapping):
            raise RecordError(rid, "provenance", "must be an object")
        if prov and (bad := bad_value(prov, numbers=True)) is not None:
            raise RecordError(rid, f"provenance.{bad[0]}", bad[1])
        old_form = False
        if "annotated" in prov:  # the schema 1.1 marker (generate wrote "defects": [] and provenance.annotated false)
            marker = prov["annotated"]
            if not isinstance(marker, bool):
                raise RecordError(rid, "provenance.annotated", f"must be true or false, got {short_repr(marker)}")
            if not marker:
                if raw:
                    raise RecordError(rid, "provenance.annotated", "is false, but the record has defects")
                annotated, old_form = False, raw is not None
            elif raw is None:
                raise RecordError(rid, "provenance.annotated", "is true, but defects is null (not annotated)")
            prov = {k: v for k, v in prov.items() if k != "annotated"}  # the defects field carries it from here on
        rec = cls(
            image_id=rid,
            defects=defects,
            image_path=obj.get("image_path"),
            width=obj.get("width"),
            height=obj.get("height"),
            caption=obj.get("caption"),
            generator=obj.get("generator"),
            seed=obj.get("seed"),
            split=obj.get("split"),
            provenance=dict(prov),
            schema_version=version,
            think=obj.get("think"),
            annotated=annotated,
            old_form=old_form,
        )
        rec.validate(defects=False)  # each defect was checked as it was parsed
        return rec


@dataclass(frozen=True, slots=True)
class Reject:
    """One dropped input, made where the input is screened. Every ``*.rejects.jsonl`` line is one of these, with
    the same keys: the record (``image_id``), the ``stage`` (or sub-step) that dropped it, why (``reason``), where
    it came from (``where``: a file and line, a task, a row), its ``line`` number in the input when it has one, and
    the input as read (``record``, the evidence)."""

    reason: str
    stage: str
    image_id: Any = None
    where: str | None = None
    line: int | None = None
    record: Any = None

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in REJECT_KEYS}


REJECT_KEYS = ("image_id", "stage", "reason", "where", "line", "record")  # every rejects file's one schema, in order
