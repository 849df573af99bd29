"""``sdg annotate pull``: Label Studio's JSON export -> core records, every annotation kept, one chosen per image.

Per annotation, the results are grouped by region id; a region is valid when it has exactly one rectangle with
one known label, one non-empty description and one integer importance 1-100, no rotation, and lies inside the
image with a positive size. An annotation with any invalid region is rejected whole (with every reason), so a
record never silently lacks a box the annotator drew. Cancelled (skipped) annotations are counted, not converted.

Outputs, next to ``--out FILE``: FILE (one record per image, by the consolidation policy), FILE.all.jsonl (every
valid annotation as a record), FILE.rejects.jsonl and FILE.summary.json, whose counts reconcile:
annotations read = valid + rejected + cancelled.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import orjson

from annotation.client import Connection, require_project
from annotation.config import AnnotateConfig
from annotation.labeling import BOX, CONFIG_VERSION, IMPORTANCE_MAX, IMPORTANCE_MIN, LABELS, NUMBER, TEXT
from sdg_data.boxes import Box, BoxError, label_studio_problem
from sdg_data.io.gc_pause import gc_paused
from sdg_data.io.report import StageReport
from sdg_data.io.secrets import secret_values
from sdg_data.records import MAX_DESCRIPTION_CHARS, Defect, ImageRecord, Reject, short_repr


_EPS = 1e-6
log = logging.getLogger(__name__)
# annotators by id (mapped through the user list: a lighter export); no drafts or predictions
SNAPSHOT_OPTIONS = {
    "annotations__completed_by": {"only_id": True},
    "drafts": {"only_id": True},
    "predictions": {"only_id": True},
}


class RegionError(ValueError):
    pass


def _user(value: Any, users: Mapping[int, str]) -> str | None:
    """The annotator's name (email) as text, whatever shape the export gives it in; None when it names no one."""
    if isinstance(value, Mapping):
        email = value.get("email")
        return email if isinstance(email, str) and email else (str(value["id"]) if "id" in value else None)
    if isinstance(value, int) and not isinstance(value, bool):
        return users.get(value, f"user-{value}")
    return str(value) if value is not None else None


def local_path(url: str, doc_root: Path | None) -> Path | None:
    """The file behind a ``/data/local-files/?d=...`` URL, when the document root is known."""
    if doc_root is None or "local-files" not in url:
        return None
    d = parse_qs(urlparse(url).query).get("d")
    return doc_root / unquote(d[0]) if d else None


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of an image file, None if it cannot be read. PNG sizes come from the header (24 bytes)."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        from PIL import Image

        with Image.open(path) as im:
            return im.size
    except OSError:
        return None


def _id_order(value: Any) -> tuple[int, Any]:
    """A sort key for an annotation id of any JSON type: numbers first, in order, then the rest as text (ids of
    different types never meet in one comparison)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, "" if value is None else str(value))


def _number(value: Any, default: float | None = None) -> float | None:
    """A finite number from an export value (a number, or its text); ``default`` for a missing one; None when it is
    not one (NaN, infinity, "abc", a list), so the caller names the region and field."""
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        got = float(value)
    except (ValueError, OverflowError):
        return None
    return got if math.isfinite(got) else None


def _region(rid: str, results: list[dict[str, Any]], size: tuple[int, int] | None) -> tuple[Defect, dict]:
    """One region's results -> a Defect and its provenance, or RegionError with the reason."""
    boxes: list[dict[str, Any]] = []
    texts: list[dict[str, Any]] = []
    numbers: list[dict[str, Any]] = []
    unknown: list[str] = []
    for r in results:  # a plain loop: this runs 45K times for a 15K-annotation export
        name = r.get("from_name")
        if name == BOX:
            boxes.append(r)
        elif name == TEXT:
            texts.append(r)
        elif name == NUMBER:
            numbers.append(r)
        else:
            unknown.append(str(name))
    if unknown:
        raise RegionError(f"region {rid}: results from unknown control(s) {sorted(set(unknown))}")
    if not boxes:
        what = "a description" if texts else "an importance"
        raise RegionError(f"region {rid}: {what} without a box")
    if len(boxes) > 1 or len(texts) > 1 or len(numbers) > 1:
        raise RegionError(f"region {rid}: {len(boxes)} boxes, {len(texts)} descriptions, {len(numbers)} importances")
    box = boxes[0]
    v = box.get("value") or {}
    labels = v.get("rectanglelabels") or []
    if len(labels) != 1 or labels[0] not in LABELS:
        raise RegionError(f"region {rid}: label {labels!r} is not exactly one of {list(LABELS)}")
    rotation = _number(v.get("rotation"), 0.0)
    if rotation is None:
        raise RegionError(f"region {rid}: field 'rotation': {short_repr(v.get('rotation'))} is not a finite number")
    if abs(rotation) > _EPS:
        raise RegionError(f"region {rid}: rotated by {rotation:g} degrees (rotation is not allowed)")
    x, y, w, h = (_number(v.get(k)) for k in ("x", "y", "width", "height"))
    if x is None or y is None or w is None or h is None:
        raise RegionError(f"region {rid}: box value lacks finite numeric x, y, width, height")
    problem = label_studio_problem(x, y, w, h, _EPS)
    if problem:
        raise RegionError(f"region {rid}: {problem}")
    if not texts:
        raise RegionError(f"region {rid}: box without a description")
    parts = (texts[0].get("value") or {}).get("text") or []
    if isinstance(parts, str):  # a single text given as a string: one text, not a list of letters
        parts = [parts]
    elif not isinstance(parts, list):
        raise RegionError(f"region {rid}: description value must be a list of texts")
    text = (
        parts[0].strip()
        if len(parts) == 1 and isinstance(parts[0], str)
        else " ".join([t.strip() for t in parts if isinstance(t, str)])
    )
    if not text.strip():
        raise RegionError(f"region {rid}: empty description")
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise RegionError(f"region {rid}: description of {len(text)} characters, more than {MAX_DESCRIPTION_CHARS}")
    if not numbers:
        raise RegionError(f"region {rid}: box without an importance")
    num = (numbers[0].get("value") or {}).get("number")
    if isinstance(num, bool) or not isinstance(num, (int, float)) or num != int(num):
        raise RegionError(f"region {rid}: importance {num!r} is not a whole number")
    if not IMPORTANCE_MIN <= num <= IMPORTANCE_MAX:
        raise RegionError(f"region {rid}: importance {num} is outside {IMPORTANCE_MIN}-{IMPORTANCE_MAX}")
    ow, oh = box.get("original_width"), box.get("original_height")
    if not (isinstance(ow, int) and isinstance(oh, int) and ow > 0 and oh > 0):
        raise RegionError(f"region {rid}: no original_width/original_height on the box")
    if size is not None and (ow, oh) != size:
        raise RegionError(f"region {rid}: drawn on a {ow}x{oh} image but the file is {size[0]}x{size[1]}")
    try:
        b = Box.from_label_studio(x, y, w, h, clamp=True)
    except BoxError as exc:
        raise RegionError(f"region {rid}: {exc}") from None
    origins = set()
    for r in results:
        o = r.get("origin")
        if o:
            origins.add(o)
    if "prediction-changed" in origins:
        origin = "prediction-changed"  # one of the region's parts was edited after the detector wrote it
    elif len(origins) == 1:
        origin = origins.pop()
    else:
        origin = "manual" if not origins else "mixed"
    prov = {
        "region_id": rid,
        "origin": origin,
        "original_size": [ow, oh],
    }
    if box.get("score") is not None:
        prov["score"] = box["score"]
    return Defect(b, labels[0], text.strip(), int(num), prov), prov


def _task_id(task: Any) -> Any:
    tid = task.get("id") if isinstance(task, Mapping) else None
    return tid if isinstance(tid, (int, str)) else None


def _task_shape(task: Any) -> str | None:
    """Why a task of an export cannot be read at all, or None."""
    if not isinstance(task, Mapping):
        return f"task must be an object, got {type(task).__name__}"
    if not isinstance(task.get("data") or {}, Mapping):
        return f"task 'data' must be an object, got {type(task.get('data')).__name__}"
    if not isinstance(task.get("annotations") or [], list):
        return f"task 'annotations' must be a list, got {type(task.get('annotations')).__name__}"
    return None


def convert_annotation(
    task: Mapping[str, Any],
    ann: Mapping[str, Any],
    users: Mapping[int, str],
    doc_root: Path | None,
    check_size: bool = True,
    image_root: Path | None = None,
) -> ImageRecord:
    """One annotation -> one record; ValueError naming every invalid region otherwise."""
    data = task.get("data") or {}
    iid = data.get("image_id")
    size = None
    if "result" not in ann or not isinstance(ann.get("result"), list):
        raise ValueError("annotation has no 'result' list (a clean image is an empty list, not a missing one)")
    path = local_path(str(data.get("image", "")), doc_root)
    if path is not None and doc_root is not None:
        from sdg_data.io.paths import PathError, Resolver

        try:
            path = Resolver(doc_root, [image_root or doc_root]).resolve(str(path), must_exist=False)
        except PathError as exc:
            raise ValueError(f"image: {exc}") from None
    if check_size and path is not None:
        size = image_size(path)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in ann["result"]:
        if not isinstance(r, Mapping) or "id" not in r:
            raise ValueError("a result without a region id")
        groups[str(r["id"])].append(dict(r))
    defects, errors = [], []
    for rid, results in groups.items():
        try:
            defects.append(_region(rid, results, size)[0])
        except RegionError as exc:
            errors.append(str(exc))
    if errors:
        raise ValueError("; ".join(errors))
    widths = {d.provenance["original_size"][0] for d in defects}
    heights = {d.provenance["original_size"][1] for d in defects}
    width = widths.pop() if len(widths) == 1 else (size[0] if size else None)
    height = heights.pop() if len(heights) == 1 else (size[1] if size else None)
    seed = data.get("seed")
    image_path = None
    if path is not None:
        image_path = str(path)
    origins = sorted({d.provenance["origin"] for d in defects})
    seed = int(seed) if isinstance(seed, (int, float)) or (isinstance(seed, str) and seed.isdigit()) else None
    task_meta = {k: data.get(k) or None for k in ("caption", "generator", "split")}
    rec = ImageRecord(
        iid,
        defects,
        image_path=image_path,
        width=width,
        height=height,
        seed=seed,
        **task_meta,
        provenance={
            "source": "label-studio",
            "labeling": CONFIG_VERSION,
            "task_id": task.get("id"),
            "annotation_id": ann.get("id"),
            "annotator": _user(ann.get("completed_by"), users),
            "lead_time_s": ann.get("lead_time"),
            "created_at": ann.get("created_at"),
            "updated_at": ann.get("updated_at"),
            "ground_truth": bool(ann.get("ground_truth")),
            "origins": origins,
            "from_prediction": (ann.get("prediction") or {}).get("model_version")
            if isinstance(ann.get("prediction"), Mapping)
            else None,
        },
    )
    rec.validate()  # the core contract: what pull writes, every later stage (and sdg validate) accepts
    return rec


def _ts(rec: ImageRecord, key: str) -> str:
    return str(rec.provenance.get(key) or "")


def consolidate(records: list[ImageRecord], cfg: AnnotateConfig) -> ImageRecord:
    """The one record of an image that later stages use, with the decision in its provenance."""
    chosen = None
    rule = "earliest annotation"
    if cfg.consolidation == "review":
        reviewed = [r for r in records if r.provenance.get("annotator") in cfg.reviewers]
        if reviewed:
            chosen, rule = max(reviewed, key=lambda r: _ts(r, "updated_at")), "latest review"
    if chosen is None:
        for who in cfg.primary_annotators:
            mine = [r for r in records if r.provenance.get("annotator") == who]
            if mine:
                chosen, rule = min(mine, key=lambda r: _ts(r, "created_at")), f"primary annotator {who}"
                break
    if chosen is None:
        chosen = min(records, key=lambda r: (_ts(r, "created_at"), _id_order(r.provenance.get("annotation_id"))))
    decision = {
        "policy": cfg.consolidation,
        "rule": rule,
        "annotation_id": chosen.provenance.get("annotation_id"),
        "annotations": [r.provenance.get("annotation_id") for r in records],
    }
    return replace(chosen, provenance={**chosen.provenance, "consolidation": decision})


_COUNTS = ("tasks", "tasks_unannotated", "malformed_tasks", "annotations", "valid", "rejected", "cancelled")


def _convert_one(task, ann, users, doc_root, cfg: AnnotateConfig) -> tuple[ImageRecord | None, str | None]:
    """One annotation's record, or None and why it is rejected."""
    try:
        root = Path(cfg.image_root) if cfg.image_root is not None else None
        return convert_annotation(task, ann, users, doc_root, cfg.check_image_size, root), None
    except ValueError as exc:  # RecordError and RegionError included
        return None, str(exc)
    except (TypeError, AttributeError, KeyError) as exc:  # a field of the wrong JSON type deeper in
        return None, f"malformed annotation ({type(exc).__name__}: {str(exc)[:160]})"


def _where(task_id: Any, annotation_id: Any = None, annotator: str | None = None) -> str:
    """Where a pulled annotation came from, as a reject names it: ``task 12, annotation 40 by alice@x``."""
    out = f"task {task_id}"
    if annotation_id is not None:
        out += f", annotation {annotation_id}"
    return out + (f" by {annotator}" if annotator else "")


def convert_export(
    tasks: Iterable[Mapping[str, Any]],
    cfg: AnnotateConfig,
    users: Mapping[int, str] | None = None,
    doc_root: Path | None = None,
    only_reviewed: bool = False,
    one_per_image: bool = True,
) -> dict[str, Any]:
    """Every annotation of every task -> records, rejects and counts (see the module docstring); annotations of
    gold tasks go to ``gold``, never to the records. ``one_per_image=False`` skips the consolidation. With
    ``only_reviewed`` the one-per-image output holds only images a reviewer annotated, with the review's record
    (the review pass); the others stay in ``all`` and are counted as ``unreviewed_images``."""
    if only_reviewed and not cfg.reviewers:
        raise ValueError("--only-reviewed needs the reviewers' emails in 'reviewers' (recipe or --reviewers)")
    users = users or {}
    all_records: list[ImageRecord] = []
    rejects: list[Reject] = []
    counts = dict.fromkeys(_COUNTS, 0)
    cancelled_by: dict[str, int] = defaultdict(int)
    for task in tasks:
        counts["tasks"] += 1
        problem = _task_shape(task)
        if problem:  # a task of the wrong JSON type: its annotations cannot be read, so the task is the reject
            rejects.append(Reject(problem, "pull", None, _where(_task_id(task)), None, task))
            counts["malformed_tasks"] += 1
            continue
        data = task.get("data") or {}
        iid = data.get("image_id")
        anns = task.get("annotations") or []
        if not anns:
            counts["tasks_unannotated"] += 1
        for ann in anns:
            counts["annotations"] += 1
            if not isinstance(ann, Mapping):
                why = f"annotation must be an object, got {type(ann).__name__}"
                rejects.append(Reject(why, "pull", iid, _where(task.get("id")), None, ann))
                counts["rejected"] += 1
                continue
            who = _user(ann.get("completed_by"), users)
            if ann.get("was_cancelled") is True:  # a skip; "false" (text) is not one
                counts["cancelled"] += 1
                cancelled_by[who or "?"] += 1
                continue
            rec, why = _convert_one(task, ann, users, doc_root, cfg) if iid else (None, "task data has no image_id")
            if rec is None:
                rejects.append(Reject(why, "pull", iid, _where(task.get("id"), ann.get("id"), who), None, ann))
                counts["rejected"] += 1
            else:
                all_records.append(rec)
                counts["valid"] += 1
    if counts["annotations"] != counts["valid"] + counts["rejected"] + counts["cancelled"]:
        raise AssertionError(f"counts do not reconcile: {counts}")
    if doc_root is not None:
        missing = _missing_images(all_records)
        counts["images_missing"] = len(missing)
        if missing:
            counts["image_missing_example"] = missing[0]
    from annotation.gold import read_gold, split_gold

    gold_ref = read_gold(cfg)
    all_records, gold_anns = split_gold(all_records, set(gold_ref))  # never ordinary annotations
    counts["gold_annotations"] = len(gold_anns)
    by_image: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in all_records:
        by_image[r.image_id].append(r)
    if only_reviewed:
        cfg = replace(cfg, consolidation="review")
    unresolved: list[ImageRecord] = []
    if not one_per_image:
        consolidated = []
    elif cfg.consolidation == "consensus":
        consolidated, unresolved = _consensus(all_records, gold_ref, gold_anns, cfg, counts)
    else:
        consolidated = [consolidate(rs, cfg) for rs in by_image.values()]
    if only_reviewed:
        reviewed = [r for r in consolidated if r.provenance["consolidation"]["rule"] == "latest review"]
        counts["unreviewed_images"] = len(consolidated) - len(reviewed)
        consolidated = reviewed
    counts["images"] = len(consolidated)
    counts["clean_images"] = sum(not r.defects for r in consolidated)
    counts["cancelled_by"] = dict(cancelled_by)
    return {"records": consolidated, "all": all_records, "rejects": rejects, "counts": counts, "gold": gold_anns,
            "gold_reference": gold_ref, "unresolved": unresolved}  # fmt: skip


def _consensus(all_records, gold_ref, gold_anns, cfg: AnnotateConfig, counts: dict) -> tuple[list, list]:
    """The consensus policy over every image (see :mod:`annotation.consensus`): (records, unresolved images);
    counts its disagreements."""
    from annotation.consensus import consensus_record, description_vectors, latest_per_annotator
    from annotation.gold import gold_scores, vote_weights
    from sdg_data.scoring.embedding import load_embedder

    weights = None
    if cfg.consensus_weights:
        scores = gold_scores(gold_ref, gold_anns, replace(cfg, gold_bootstrap=0), None)
        weights = vote_weights(scores, cfg) or None
        counts["consensus_weights"] = weights or {}
    images = latest_per_annotator(all_records, apart=True)
    # a medoid needs three descriptions: with two annotators per image no embedder is loaded at all
    crowded = [r for by_who in images.values() if len(by_who) >= 3 for r in by_who.values()]
    vectors = description_vectors(crowded, load_embedder(cfg.embedder)) if crowded else None
    out = [
        consensus_record(by_who, cfg.consensus_iou, cfg.consensus_quorum, weights, vectors)
        for by_who in images.values()
    ]
    disputed = [len(r.provenance["consolidation"]["disagreements"]) for r in out]
    counts["consensus_disagreements"] = sum(disputed)
    counts["images_with_disagreements"] = sum(n > 0 for n in disputed)
    counts["consensus_left_out"] = sum(len(r.provenance["consolidation"].get("left_out", [])) for r in out)
    unresolved = [r for r in out if "unresolved" in r.provenance["consolidation"]]
    counts["unresolved_images"] = len(unresolved)
    return [r for r in out if "unresolved" not in r.provenance["consolidation"]], unresolved


def _missing_images(records: list[ImageRecord]) -> list[str]:
    """The image files records name that are not on this machine (an export pulled elsewhere, a moved folder)."""
    import os

    seen: dict[str, bool] = {}
    out = []
    for r in records:
        p = r.image_path
        if p and p not in seen:
            seen[p] = os.path.isfile(p)
            if not seen[p]:
                out.append(p)
    return out


def export_image_folder(tasks: list[Any]) -> tuple[str | None, str | None]:
    """(the folder an export's local-files paths start with, one such path): the name of the image root on the
    machine the export was made on."""
    for t in tasks:
        data = t.get("data") if isinstance(t, Mapping) else None
        url = str(data.get("image", "")) if isinstance(data, Mapping) else ""
        if "local-files" in url:
            d = parse_qs(urlparse(url).query).get("d")
            if d:
                rel = unquote(d[0])
                return rel.split("/", 1)[0], rel
    return None, None


def missing_hint(counts: Mapping[str, Any], cfg: AnnotateConfig, tasks: list[Any] | None = None) -> str | None:
    """One line when records name images that are not here: which folder the export needs as --image-root."""
    n = counts.get("images_missing") or 0
    if not n:
        return None
    folder, example = export_image_folder(tasks or [])
    need = f"a folder named {folder!r} holding e.g. {example!r}" if folder else "the folder the server served"
    return (
        f"{n} image(s) the annotations name are not under {cfg.image_root} "
        f"(e.g. {counts.get('image_missing_example')}): give --image-root your copy of {need}"
    )


def _dumps_lines(rows: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def _write_atomic(path: Path, data: bytes) -> None:
    from sdg_data.io.files import write_bytes
    from sdg_data.io.secrets import redact

    write_bytes(path, redact(data.decode("utf-8")).encode("utf-8") if secret_values() else data)


def write_outputs(
    result: dict[str, Any], out: str | Path, extra: dict | None = None, image_root: Path | None = None
) -> dict[str, Any]:
    """Write the records (one per image), all annotations and the reports; the image root the records were checked
    in travels with them (:func:`sdg_data.io.paths.vouch`), so distill needs no --image-root."""
    from sdg_data.io.paths import vouch

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = out.with_suffix("")
    counts = result["counts"]
    # one unit per annotation, plus each task whose shape could not be read at all
    report = StageReport("pull", read=counts["annotations"] + counts["malformed_tasks"], kept=counts["valid"])
    report.left_out = counts["cancelled"]  # skipped by the annotator: counted, neither kept nor rejected
    report.add(result["rejects"])
    report.extras = {**counts, **(extra or {})}
    if not report.failed:  # a pull that kept nothing leaves the last good records as they were
        _write_atomic(out, _dumps_lines(r.to_json() for r in result["records"]))
        _write_atomic(Path(f"{stem}.all.jsonl"), _dumps_lines(r.to_json() for r in result["all"]))
        # side files: the annotators' gold answers (for the lead; never part of the dataset) and consensus's
        # disagreements (an unresolved image's boxes included); a rerun that has none leaves no stale one behind
        disputes = [
            {"image_id": r.image_id, "task_id": r.provenance.get("task_id"),
             "unresolved": (r.provenance.get("consolidation") or {}).get("unresolved"), **d}
            for r in [*result["records"], *result.get("unresolved", [])]
            for d in (r.provenance.get("consolidation") or {}).get("disagreements") or []
        ]  # fmt: skip
        for name, rows in (("gold", [r.to_json() for r in result.get("gold", [])]), ("disagreements", disputes)):
            side = Path(f"{stem}.{name}.jsonl")
            if rows:
                _write_atomic(side, _dumps_lines(rows))
            elif side.is_file() or side.is_symlink():
                side.unlink()
        if image_root:  # vouched over the records as written, for the roots their images lie in
            report.extras.update(vouch(out, [image_root]))
    return report.write(out.parent, prefix=f"{out.stem}.")


def pull_from_export(
    export: str | Path, out: str | Path, cfg: AnnotateConfig, only_reviewed: bool = False
) -> dict[str, Any]:
    """A JSON export a user downloaded from the UI."""
    from annotation.server import document_root

    t0 = time.perf_counter()
    with gc_paused():
        try:
            tasks = orjson.loads(Path(export).read_bytes())
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{export}: not a Label Studio JSON export ({exc})") from None
        if not isinstance(tasks, list):
            raise ValueError(
                f"{export}: a Label Studio JSON export is a list of tasks (JSON_MIN and CSV are not read)"
            )
        if cfg.image_root is None:
            folder, example = export_image_folder(tasks)
            if folder is not None:
                raise ValueError(
                    f"{export}: its images are local files under a folder named {folder!r} (e.g. {example!r}) on "
                    f"the machine it was exported from: give --image-root your copy of that folder"
                )
        result = convert_export(tasks, cfg, doc_root=document_root(cfg), only_reviewed=only_reviewed)
        extra = {"source": str(export), "seconds": round(time.perf_counter() - t0, 3)}
        hint = missing_hint(result["counts"], cfg, tasks)
        if hint:
            extra["hint"] = hint
        return write_outputs(result, out, extra, Path(cfg.image_root or document_root(cfg)).resolve())


def since_filter(since: str) -> str:
    """Label Studio's Datetime filter wants exactly %Y-%m-%dT%H:%M:%S.%fZ (UTC); anything else is a 500."""
    try:
        when = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since {since!r}: give an ISO time such as 2026-11-22T08:00:00Z") from None
    if when.tzinfo is not None:
        from datetime import timezone

        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def export_tasks(
    conn: Connection, project_id: int, since: str | None = None, with_predictions: bool = False
) -> list[dict[str, Any]]:
    """A snapshot export (full annotation objects, annotators as objects), optionally only of tasks updated after
    ``since`` (through a Data Manager view); ``with_predictions`` keeps the predictions' results (status compares
    what annotators submitted with what they were shown)."""
    c = conn.client
    task_filter: dict[str, Any] = {"only_with_annotations": True}
    view_id = None
    if since:
        flt = {
            "conjunction": "and",
            "items": [
                {
                    "filter": "filter:tasks:updated_at",
                    "operator": "greater",
                    "type": "Datetime",
                    "value": since_filter(since),
                }
            ],
        }
        view = conn.call(
            "create view", lambda: c.views.create(project=project_id, data={"title": "sdg-pull-since", "filters": flt})
        )
        view_id = view.id
        task_filter["view"] = view_id
    try:
        t0 = time.perf_counter()
        snap = conn.call(
            "create export",
            lambda: c.projects.exports.create(
                id=project_id,
                title="sdg-pull",
                task_filter_options=task_filter,
                serialization_options={**SNAPSHOT_OPTIONS, "predictions": {"only_id": False}}
                if with_predictions
                else SNAPSHOT_OPTIONS,
            ),
        )
        t1 = time.perf_counter()
        chunks = conn.call(
            "download export",
            lambda: list(c.projects.exports.download(id=project_id, export_pk=snap.id, export_type="JSON")),
        )
        t2 = time.perf_counter()
        conn.call("delete export", lambda: c.projects.exports.delete(id=project_id, export_pk=snap.id))
    finally:
        if view_id is not None:
            conn.call("delete view", lambda: c.views.delete(id=view_id))
    tasks = orjson.loads(b"".join(chunks))
    log.info("export: create %.2f s, download %.2f s, parse %.2f s", t1 - t0, t2 - t1, time.perf_counter() - t2)
    return tasks


def users_map(conn: Connection) -> dict[int, str]:
    return {u.id: u.email for u in conn.call("list users", lambda: list(conn.client.users.list()))}


def pull(conn: Connection, out: str | Path, since: str | None = None, only_reviewed: bool = False) -> dict[str, Any]:
    from annotation.client import require_image_root
    from annotation.server import document_root

    t0 = time.perf_counter()
    project = require_project(conn)
    require_image_root(conn, project)
    with gc_paused():
        tasks = export_tasks(conn, project.id, since)
        t1 = time.perf_counter()
        result = convert_export(tasks, conn.cfg, users_map(conn), document_root(conn.cfg), only_reviewed)
        t2 = time.perf_counter()
        extra = {
            "source": conn.cfg.url,
            "project": project.id,
            "since": since,
            "export_s": round(t1 - t0, 3),
            "convert_s": round(t2 - t1, 3),
        }
        hint = missing_hint(result["counts"], conn.cfg, tasks)
        if hint:
            extra["hint"] = hint
        summary = write_outputs(result, out, extra, Path(conn.cfg.image_root or document_root(conn.cfg)).resolve())
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary
