"""COCO detection JSON out of and into SDG records, for detection tooling (FiftyOne, CVAT, pycocotools).

Two categories (1 ``artifact``, 2 ``misalignment``); each annotation's ``bbox`` is ``[x, y, w, h]`` in pixels and
its ``attributes`` hold the ``description`` and ``importance`` (CVAT reads and writes that key). Each image keeps
the SDG fields (``sdg_image_id``, caption, generator, split, seed) beside COCO's. Clean images are listed with no
annotations. ``file_name`` is the image path relative to the JSON's folder (or the copy made with
``--copy-images``); a dataset folder's images are always copied out, since they live inside its parquet shards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdg_data.boxes import Box, BoxError
from sdg_data.io.report import StageReport
from sdg_data.records import LABELS, Defect, ImageRecord, RecordError, Reject, is_id, short_repr


CATEGORIES = [{"id": i, "name": name, "supercategory": "defect"} for i, name in enumerate(LABELS, 1)]
CATEGORY_ID = {c["name"]: c["id"] for c in CATEGORIES}


def _relative(path: Path, folder: Path) -> str:
    import os

    return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()


def export_coco(
    source: str | Path,
    out_json: str | Path,
    copy_images: str | Path | None = None,
    image_roots=None,
    split: str = "all",
) -> dict[str, Any]:
    """Write ``out_json`` from a records JSONL or an ``sdg build`` folder; images that fail their checks go to
    ``<out>.export.rejects.jsonl``. Returns the summary."""
    from sdg_data.io.files import file_ids, output_root, refuse_input, write_bytes, write_json
    from sdg_data.io.jsonl import input_kind, screen_records
    from sdg_data.io.paths import safe_filename
    from sdg_data.io.sources import iter_images

    out_json = Path(out_json)
    folder = out_json.parent
    is_dataset = input_kind(Path(source)) in ("dataset", "images")
    copy_to = Path(copy_images) if copy_images else (out_json.with_suffix("") / "images" if is_dataset else None)
    if copy_to is not None:  # the copies land below it, never through a link: the folder the user named is the root
        output_root(copy_images if copy_images else folder)
    images, annotations, rejects = [], [], []
    # every file the run reads, known before the first copy: a copy named after another record's id must never
    # replace a source image (ids and file names can cross when --copy-images is the source folder)
    inputs = file_ids([Path(source)] + ([p for _, _, p in screen_records(source, (), "export", image_roots or ())[0]]
                                        if not is_dataset else []))  # fmt: skip
    refuse_input(out_json, inputs)
    resolver = _resolver(source, image_roots)
    for rec, got in iter_images(source, image_roots, rejects, checked=True, stage="export", split=split):
        if not rec.annotated:  # COCO cannot say "not annotated": an image without boxes would read as clean
            why = "defects: not annotated yet; a COCO file has no way to say so and would read it as clean"
            rejects.append(Reject(why, "export", rec.image_id, str(source), None, rec.to_json()))
            continue
        image_id = len(images) + 1
        if copy_to is not None:
            dest = copy_to / f"{safe_filename(rec.image_id)}.{(got.format or 'png').lower()}"
            try:  # the bytes that were checked, not the path read again (it may have changed since)
                refuse_input(dest, inputs)
                write_bytes(dest, got.data)
            except OSError as exc:
                rejects.append(Reject(f"copy: {exc}", "export", rec.image_id, str(dest)))
                continue
            file_name = _relative(dest, folder)
        else:
            file_name = _relative(resolver.resolve(rec.image_path), folder)  # type: ignore[union-attr]
        images.append(_coco_image(image_id, file_name, rec, got.width, got.height))
        annotations += _coco_annotations(rec, image_id, got.width, got.height, len(annotations) + 1)
    coco = {
        "info": {"description": "SDG defects (artifact / misalignment) exported by sdg", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    report = StageReport("export", read=len(images) + len(rejects), kept=len(images))
    if len(images) or not rejects:
        write_json(out_json, coco)
    report.add(rejects)
    report.extras = {"annotations": len(annotations), "images_copied_to": str(copy_to) if copy_to else None}
    return report.write(folder, prefix=f"{out_json.stem}.")


def _coco_image(image_id: int, file_name: str, rec: Any, w: int, h: int) -> dict[str, Any]:
    """A COCO image entry with the SDG fields a round trip needs (id, caption, generator, split, seed)."""
    return {"id": image_id, "file_name": file_name, "width": w, "height": h, "sdg_image_id": rec.image_id,
            "caption": rec.caption, "generator": rec.generator, "split": rec.split, "seed": rec.seed}  # fmt: skip


def _coco_annotations(rec: Any, image_id: int, w: int, h: int, first_id: int) -> list[dict[str, Any]]:
    """A record's defects as COCO annotations (pixel bbox; description and importance as attributes)."""
    out = []
    for k, d in enumerate(rec.defects):
        bbox = [round(v, 3) for v in d.box.to_coco(w, h)]
        out.append({"id": first_id + k, "image_id": image_id, "category_id": CATEGORY_ID[d.label], "bbox": bbox,
                    "area": round(bbox[2] * bbox[3], 3), "iscrowd": 0,
                    "attributes": {"description": d.description, "importance": d.importance}})  # fmt: skip
    return out


def _resolver(source: str | Path, image_roots):
    """The resolver of a JSONL source's image paths (one per export: folder lookups are cached inside it), None
    for a dataset folder, whose images live in parquet."""
    from sdg_data.io.jsonl import input_kind
    from sdg_data.io.paths import Resolver

    if input_kind(Path(source)) in ("dataset", "images"):
        return None
    return Resolver.for_records(source, image_roots)


def import_coco(coco_json: str | Path, out_jsonl: str | Path) -> dict[str, Any]:
    """Records from a COCO detection JSON (ours, or one edited in CVAT / FiftyOne): an image whose annotations do
    not make valid defects is rejected whole, with the reason. Returns the summary."""
    from sdg_data.io.files import write_jsonl

    coco_json, out_jsonl = Path(coco_json), Path(out_jsonl)
    try:
        data = json.loads(coco_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{coco_json}: not a readable COCO JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{coco_json}: not a COCO JSON (an object with images, annotations and categories)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{coco_json}: field {key!r} must be a list")
    cats = {c["id"]: c.get("name") for c in data["categories"] if isinstance(c, dict) and is_id(c.get("id"))}
    # every image entry and every annotation that belongs to none is a unit: kept, or a reject with its reason
    ids: dict[Any, int] = {}
    for im in data["images"]:
        if isinstance(im, dict) and is_id(im.get("id")):
            ids[im["id"]] = ids.get(im["id"], 0) + 1
    by_image: dict[Any, list[dict]] = {}
    report = StageReport("import", read=len(data["images"]))
    for k, a in enumerate(data["annotations"]):
        key = a.get("image_id") if isinstance(a, dict) else None
        if isinstance(a, dict) and is_id(key) and key in ids:
            by_image.setdefault(key, []).append(a)
            continue
        report.read += 1
        why = f"annotations[{k}]: not an object"
        if isinstance(a, dict):
            why = (f"annotations[{k}]: image_id {short_repr(key)} names no image entry (image ids are matched by "
                   "value and type: 1 and \"1\" differ)")  # fmt: skip
        report.reject(why, None, f"annotations[{k}]", a)
    rows, seen = [], set()
    base = coco_json.parent
    for n, im in enumerate(data["images"]):
        try:
            key = im.get("id") if isinstance(im, dict) else None
            if not is_id(key) or key is None:
                raise ValueError(f"field 'id': {short_repr(key)} is not an image id")
            if ids[key] > 1:
                raise ValueError(f"field 'id': {short_repr(key)} is used by {ids[key]} image entries, so which image "
                                 "its annotations belong to is ambiguous")  # fmt: skip
            rec = _record(im, by_image.get(key, []), cats, base, out_jsonl.parent)
            if rec.image_id in seen:
                raise ValueError(f"image id {rec.image_id!r} (from sdg_image_id or the file name) is already imported")
        except (RecordError, BoxError, ValueError, TypeError, KeyError) as exc:
            iid = im.get("sdg_image_id") or im.get("file_name") if isinstance(im, dict) else None
            report.reject(f"images[{n}]: {exc}", iid if isinstance(iid, str) else None, f"images[{n}]", im)
            continue
        seen.add(rec.image_id)
        rows.append(rec.to_json())
        report.kept += 1
    if not report.failed:
        write_jsonl(out_jsonl, rows)
    report.extras = {"defects": sum(len(r["defects"]) for r in rows)}
    return report.write(out_jsonl.parent, prefix=f"{out_jsonl.stem}.")


def _record(im: Any, anns: list[dict], cats: dict, base: Path, out_folder: Path) -> ImageRecord:
    if not isinstance(im, dict):
        raise ValueError(f"image entry must be an object, got {type(im).__name__}")
    w, h = im.get("width"), im.get("height")
    if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
        raise ValueError(f"width/height must be positive integers, got {w!r} x {h!r}")
    file_name = im.get("file_name")
    if not isinstance(file_name, str) or not file_name:
        raise ValueError("file_name is missing")
    iid = str(im.get("sdg_image_id") or Path(file_name).stem)
    defects = []
    for k, a in enumerate(anns):
        label = cats.get(a.get("category_id"))
        if label not in LABELS:
            raise ValueError(f"annotation {a.get('id')}: category {a.get('category_id')!r} is not one of {LABELS}")
        attrs = a.get("attributes") if isinstance(a.get("attributes"), dict) else {}
        box = Box.from_coco(a.get("bbox") or [], w, h).clamp()
        imp, desc = attrs.get("importance"), attrs.get("description", "")
        if not isinstance(desc, str):  # taken as given or refused: never a str() of whatever was there
            raise ValueError(f"annotation {a.get('id')}: attribute 'description' must be text, got {short_repr(desc)}")
        whole = (isinstance(imp, int) and not isinstance(imp, bool)) or (isinstance(imp, float) and imp.is_integer())
        if imp is not None and not whole:
            raise ValueError(f"annotation {a.get('id')}: attribute 'importance' must be whole, got {short_repr(imp)}")
        d = Defect(box, label, desc, int(imp) if imp is not None else None)
        d.validate(iid, f"annotations[{k}]")
        defects.append(d)
    path = _relative(base / file_name, out_folder)  # relative to the records file, as records keep it
    rec = ImageRecord(image_id=iid, defects=defects, image_path=path, width=w, height=h,
                      caption=im.get("caption"), generator=im.get("generator"), split=im.get("split"),
                      seed=im.get("seed"), provenance={"stage": "import", "source": "coco"})  # fmt: skip
    rec.validate()
    return rec
