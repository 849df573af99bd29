"""Import the released SDG-30K annotation JSONL (``annotations/train.jsonl``, ``test.jsonl``) into core records.

Released rows carry ``filepath, caption, generator``, the human boxes per type (``artifact_bboxes``,
``misalignment_bboxes``), the teacher output ``ann_response`` (think + answer, the SFT target) and
``ann_translated_bboxes`` (English description + importance, the GRPO / eval ground truth).

The box order of the release is ambiguous (sdg-method.md section 1): the paper and the translated boxes use xyxy,
while the raw per-type boxes follow Gemini's yxyx. Both orders are explicit options, recorded in provenance, and
:func:`order_agreement` measures which raw order agrees with the translated boxes on the same images, so the choice
can be checked on the data rather than assumed. A row that cannot be converted goes to the rejects with its reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from sdg_data.boxes import Box, BoxError, BoxOrder, boxes_array, iou_matrix
from sdg_data.io.files import write_jsonl, write_records
from sdg_data.io.jsonl import InputError, LineError, iter_lines
from sdg_data.io.report import StageReport
from sdg_data.matching import hungarian
from sdg_data.records import LABELS, Defect, ImageRecord, RecordError, check_importance


DefectSource = Literal["translated", "raw", "auto"]
PLACEHOLDER_LABELS = frozenset({"no-problem", "no_problem", "noproblem", "none", "clean", "no problem"})
_RAW_FIELDS = {"artifact": "artifact_bboxes", "misalignment": "misalignment_bboxes"}


@dataclass
class ImportConfig:
    source: DefectSource = field(
        default="auto", metadata={"help": "translated (English, importance), raw (per-type fields) or auto"}
    )
    translated_order: BoxOrder = field(
        default="xyxy", metadata={"help": "box order of ann_translated_bboxes (the paper: xyxy)"}
    )
    raw_order: BoxOrder = field(
        default="yxyx", metadata={"help": "box order of artifact_/misalignment_bboxes (Gemini: yxyx)"}
    )
    split: str | None = field(
        default=None, metadata={"help": "train | test; default from the file name (train.jsonl, test.jsonl)"}
    )
    image_root: str | None = field(
        default=None, metadata={"help": "folder the release's filepaths are relative to; images there are verified"}
    )


def image_id_for(filepath: str) -> str:
    """A stable id from the released relative path (stems repeat across generators, so the whole path counts)."""
    stem = str(PurePosixPath(filepath).with_suffix(""))
    return stem.replace("/", "__") if len(stem) <= 120 else hashlib.sha1(filepath.encode()).hexdigest()[:20]


def _items(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        import json

        value = json.loads(value)
    if not isinstance(value, list):
        raise ValueError(f"must be a list, got {type(value).__name__}")
    return value


def _defect(item: Any, label: str | None, order: BoxOrder, where: str, rid: str) -> Defect | None:
    """One released box item (a dict with box_2d, or a bare 4-number list); None for a clean-image placeholder."""
    if isinstance(item, list):
        item = {"box_2d": item}
    if not isinstance(item, Mapping):
        raise RecordError(rid, where, f"must be an object or a 4-number list, got {type(item).__name__}")
    raw_label = item.get("label", label)
    tag = str(item.get("tag", "")).strip().lower()
    if str(raw_label).strip().lower() in PLACEHOLDER_LABELS or tag in PLACEHOLDER_LABELS:
        return None
    if raw_label not in LABELS:
        raise RecordError(rid, f"{where}.label", f"must be one of {LABELS}, got {raw_label!r}")
    try:
        box = Box.from_grid(item.get("box_2d"), order=order)
    except BoxError as exc:
        raise RecordError(rid, f"{where}.box_2d", str(exc)) from None
    problem = box.problem()
    if problem:
        raise RecordError(rid, f"{where}.box_2d", problem)
    desc = item.get("description", item.get("desc")) or ""
    if not isinstance(desc, str) or not desc.strip():
        raise RecordError(
            rid,
            f"{where}.description",
            "is empty: every SDG defect needs one (raw per-type fields can hold bare boxes; "
            "--source translated carries the descriptions)",
        )
    try:
        imp = check_importance(item.get("importance"))
    except ValueError as exc:
        raise RecordError(rid, f"{where}.importance", str(exc)) from None
    return Defect(box=box, label=raw_label, description=str(desc), importance=imp)


def _image_size(filepath: str, image_root: str | Path | None, rid: str) -> tuple[int | None, int | None]:
    """The image's verified size when it is under the root; the file must not leave the root; a file not there
    (yet) is fine: annotations can be imported before the images are downloaded."""
    if not image_root:
        return None, None
    from sdg_data.io.images import ImageError, load_image
    from sdg_data.io.paths import PathError, Resolver

    resolver = Resolver(image_root)
    try:
        if not resolver.resolve(filepath, must_exist=False).exists():
            return None, None
        checked = load_image(filepath, resolver)
    except (PathError, ImageError) as exc:
        raise RecordError(rid, "filepath", str(exc)) from None
    return checked.width, checked.height


def convert_row(
    row: Mapping[str, Any],
    split: str | None,
    source: DefectSource = "auto",
    translated_order: BoxOrder = "xyxy",
    raw_order: BoxOrder = "yxyx",
    image_root: str | Path | None = None,
) -> tuple[ImageRecord, int, str]:
    """One released row -> (record, placeholders dropped, defect source used). Raises RecordError."""
    filepath = row.get("filepath")
    if not isinstance(filepath, str) or not filepath:
        raise RecordError(None, "filepath", "missing or not a string")
    rid = image_id_for(filepath)
    use = source
    if source == "auto":
        use = "translated" if row.get("ann_translated_bboxes") is not None else "raw"
    defects: list[Defect | None] = []
    try:
        if use == "translated":
            if row.get("ann_translated_bboxes") is None:
                raise RecordError(rid, "ann_translated_bboxes", "missing (use --source raw)")
            for j, it in enumerate(_items(row["ann_translated_bboxes"])):
                defects.append(_defect(it, None, translated_order, f"ann_translated_bboxes[{j}]", rid))
        else:
            for label, name in _RAW_FIELDS.items():
                for j, it in enumerate(_items(row.get(name))):
                    defects.append(_defect(it, label, raw_order, f"{name}[{j}]", rid))
    except ValueError as exc:
        if isinstance(exc, RecordError):
            raise
        raise RecordError(rid, "defects", str(exc)) from None
    kept = [d for d in defects if d is not None]
    path = str(Path(image_root) / filepath) if image_root else filepath
    width, height = _image_size(filepath, image_root, rid)
    prov: dict[str, Any] = {
        "source": "SDG-30K release",
        "filepath": filepath,
        "defect_source": use,
        "box_order": translated_order if use == "translated" else raw_order,
    }
    if row.get("ann_response"):
        prov["teacher_response"] = row["ann_response"]
    meta = {"caption": row.get("caption"), "generator": row.get("generator"), "split": split, "provenance": prov}
    rec = ImageRecord(rid, kept, image_path=path, width=width, height=height, **meta)
    rec.validate()
    return rec, len(defects) - len(kept), use


def order_agreement(rows: Iterable[Mapping[str, Any]], translated_order: BoxOrder = "xyxy") -> dict[str, Any]:
    """Mean matched IoU between the translated boxes and the raw boxes read as xyxy and as yxyx, per image.

    The order whose mean is clearly higher is the raw fields' real order (translated boxes are taken as
    ``translated_order``). Rows without both kinds of boxes are skipped.
    """
    sums = {"xyxy": 0.0, "yxyx": 0.0}
    n = 0
    for row in rows:
        try:
            tr = [Box.from_grid(it["box_2d"], translated_order) for it in _items(row.get("ann_translated_bboxes"))]
            raw = [
                it["box_2d"] if isinstance(it, Mapping) else it
                for f in _RAW_FIELDS.values()
                for it in _items(row.get(f))
            ]
        except (ValueError, KeyError, TypeError):
            continue
        if not tr or not raw:
            continue
        n += 1
        for order in sums:
            try:
                cand = [Box.from_grid(b, order) for b in raw]
            except BoxError:
                continue
            iou = iou_matrix(boxes_array(tr), boxes_array(cand))
            r, c = hungarian(iou)
            sums[order] += float(iou[r, c].sum()) / max(len(tr), len(cand))
    return {"images": n, **{f"mean_iou_raw_as_{k}": (v / n if n else None) for k, v in sums.items()}}


def import_sdg30k(
    src: str | Path, out: str | Path, rejects: str | Path | None = None, cfg: ImportConfig | None = None
) -> tuple[StageReport, dict[str, Any]]:
    """Convert a released annotation file; every row is written or rejected with its reason, counts reconcile.
    Returns the stage report (read, kept, rejects; clean images, placeholders dropped and the defect source in
    ``extras``) and the raw box-order check."""
    cfg = cfg or ImportConfig()
    src, out = Path(src), Path(out)
    report = StageReport("import")
    records, raw_rows, counts = _convert_rows(src, cfg, report)
    if report.read == 0:
        raise InputError(f"{src}: no rows (an empty file); nothing to import")
    report.kept = len(records)
    if not report.failed:
        write_records(out, records)
    agreement = order_agreement(raw_rows, cfg.translated_order)
    report.extras = {**counts, "box_order_check": agreement}
    if cfg.image_root and not report.failed:  # the records' image paths lie under it: it travels with them
        from sdg_data.io.paths import vouch

        report.extras.update(vouch(out, [cfg.image_root]))
    if rejects is None:
        report.write(out.parent, prefix=f"{out.stem}.")
    else:  # the user named the rejects file: the summary goes beside it
        from sdg_data.io.files import write_json

        report.reconcile()
        write_jsonl(rejects, (r.to_json() for r in report.rejects))
        write_json(
            Path(rejects).with_name(Path(rejects).name.removesuffix(".jsonl") + ".summary.json"), report.summary()
        )
    return report, agreement


def _convert_rows(
    src: Path, cfg: ImportConfig, report: StageReport
) -> tuple[list[ImageRecord], list[Mapping[str, Any]], dict[str, Any]]:
    """Every row of the released file, converted or rejected into ``report`` with its reason: the records, a sample
    of raw rows for the box-order check, and the counts (clean images, placeholders dropped, defect sources)."""
    split = cfg.split or {"train": "train", "test": "test"}.get(src.stem)
    how = (cfg.source, cfg.translated_order, cfg.raw_order, cfg.image_root)
    counts: dict[str, Any] = {"clean": 0, "placeholders_dropped": 0, "by_source": {}}
    records: list[ImageRecord] = []
    raw_rows: list[Mapping[str, Any]] = []
    seen: set[str] = set()
    for lineno, row in iter_lines(src):
        report.read += 1
        where = f"{src}:{lineno}"
        if isinstance(row, LineError):
            report.reject(str(row), None, where, None, line=lineno)
            continue
        if isinstance(row, Mapping) and len(raw_rows) < 2000:
            raw_rows.append(row)
        try:
            if not isinstance(row, Mapping):
                raise RecordError(None, "<line>", "must be a JSON object")
            rec, dropped, used = convert_row(row, split, *how)
            if rec.image_id in seen:
                raise RecordError(rec.image_id, "filepath", "duplicate of an earlier row")
        except RecordError as exc:
            report.reject(str(exc), None, where, row, line=lineno)
            continue
        except (TypeError, AttributeError, KeyError, RecursionError) as exc:  # a field of the wrong JSON type
            reason = f"record '?' field '<row>': malformed ({type(exc).__name__}: {str(exc)[:120]})"
            report.reject(reason, None, where, row, line=lineno)
            continue
        seen.add(rec.image_id)
        records.append(rec)
        counts["placeholders_dropped"] += dropped
        counts["clean"] += not rec.defects
        counts["by_source"][used] = counts["by_source"].get(used, 0) + 1
    return records, raw_rows, counts
