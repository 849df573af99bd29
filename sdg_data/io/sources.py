"""Where records and their images come from: a records JSONL with image files inside the allowed roots, or a dataset
folder built by ``sdg build`` (the checked bytes in its shards). Every stage that reads images reads them here."""

from __future__ import annotations

from pathlib import Path

from sdg_data.records import Reject


def iter_images(
    source: str | Path,
    image_roots: list[str | Path] | None = None,
    rejects: list[Reject] | None = None,
    checked: bool = False,
    stage: str = "viz",
    split: str = "all",
):
    """(record, PIL image) from a records JSONL (paths inside the allowed roots) or a dataset folder's annotations;
    with ``checked``, (record, CheckedImage): the bytes that were verified, for a writer that stores them.

    Records whose line, path or image fails its check are appended to ``rejects`` (if given, as ``stage``'s
    rejects) and skipped. A dataset folder is read by ``split`` (``all``, ``train`` or ``test``)."""
    from sdg_data.io.images import ImageError, check_bytes, read_verified
    from sdg_data.io.jsonl import input_kind

    rejects = [] if rejects is None else rejects
    source = Path(source)
    if input_kind(source) in ("dataset", "images"):
        from sdg_data.io.arrow import image_bytes, read_parquet_records, read_rows, split_shards

        for shard in split_shards(source, split):
            recs = read_parquet_records(shard)
            images = read_rows(shard, ["images", "image"]).columns[0].to_pylist()  # the same rows, in order
            for rec, cell in zip(recs, images, strict=True):
                try:
                    got = check_bytes(image_bytes(cell) or b"", pixels=True)
                    yield rec, got if checked else got.open()
                except ImageError as exc:
                    rejects.append(Reject(f"image: {exc}", stage, rec.image_id, f"{shard.name}"))
        return
    from sdg_data.io.jsonl import screen_records

    ok, bad, _ = screen_records(source, (), stage, image_roots or ())
    rejects.extend(bad)
    for lineno, rec, path in ok:
        try:
            got = read_verified(path, (rec.width, rec.height), pixels=True)
            yield rec, got if checked else got.open()
        except ImageError as exc:
            rejects.append(Reject(f"image: {exc}", stage, rec.image_id, f"{source}:{lineno}", lineno))


def records_input(source: str | Path, folder: str | Path) -> Path:
    """A records JSONL for any stage that reads records and image files: ``source`` itself when it is one, else
    (a dataset folder from ``sdg build``) its annotations written out under ``folder`` (``records.jsonl`` and
    ``images/``, the checked bytes as stored), with the folder vouched for as their image root."""
    from sdg_data.io.files import write_bytes, write_json, write_jsonl
    from sdg_data.io.jsonl import input_kind
    from sdg_data.io.paths import safe_filename, vouch

    source, folder = Path(source), Path(folder)
    if input_kind(source) != "dataset":
        return source
    rows, rejects = [], []
    for rec, got in iter_images(source, None, rejects, checked=True, stage="source"):
        rel = f"images/{safe_filename(rec.image_id)}.{(got.format or 'png').lower()}"
        write_bytes(folder / rel, got.data)
        rows.append({**rec.to_json(), "image_path": rel, "width": got.width, "height": got.height})
    if not rows:
        raise ValueError(f"{source}: no image of the dataset could be read ({len(rejects)} rejected)")
    out = folder / "records.jsonl"
    write_jsonl(out, rows)
    write_json(folder / "source.summary.json", {"source": str(source), "records": len(rows),
                                                 "rejected": len(rejects), **vouch(out, [folder])})  # fmt: skip
    return out
