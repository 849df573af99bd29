"""``sdg build``: distilled records -> a Hugging Face dataset folder (parquet shards under ``data/`` and a card).

Configs (each loadable with ``datasets.load_dataset(DIR, NAME)``, offline):

- ``annotations``  one row per image, both splits: the image, its metadata, defects on the 0-1000 grid, think;
- ``sft``          the jittered pairs of the train split, trl's conversational VLM form (``messages``, ``images``);
- ``grpo``         one row per train image: ``prompt``, ``images`` and ``gt_defects`` (what the core reward reads);
- ``test``         the held-out split with ground truth, in the record form ``sdg eval --gt`` reads.

They are views (columns, and ``epoch == 0`` for the per-image ones; see :data:`sdg_data.io.arrow.VIEWS`) of two
tables, ``data/train`` and ``data/test``, so each image is stored once in the whole folder: the train table has a
row per SFT pair, the pairs of one image share a row group and the image column is dictionary-encoded. Image
bytes are copied from disk untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from sdg_data.config import Count, Fraction, Positive
from sdg_data.dataset.jitter import JitterConfig, pair_responses
from sdg_data.dataset.pagecache import WriteBehind
from sdg_data.detector_prompt import prompt_messages, sft_messages, template_id
from sdg_data.io import png
from sdg_data.io.arrow import FIRST_PAIR, VIEWS
from sdg_data.io.files import (
    check_output,
    files_below,
    output_root,
    remove_output,
    write_json,
    write_jsonl,
    write_text,
)
from sdg_data.io.images import MAX_PIXELS, ImageError, read_verified
from sdg_data.io.jsonl import screen_records
from sdg_data.io.progress import progress_bar
from sdg_data.io.report import REJECTS_SUFFIX, SUMMARY_SUFFIX, StageReport, failed_run_folder
from sdg_data.records import ImageRecord
from sdg_data.splits import PAPER_TEST_FRACTION, assign_splits


CONFIGS = tuple(VIEWS)  # annotations, sft, grpo, test
TABLES = ("train", "test")
_IMAGE_BYTES = "images.list.element.bytes"


@dataclass
class BuildConfig:
    test_fraction: Fraction = field(
        default=PAPER_TEST_FRACTION, metadata={"help": "share of images held out, by whole prompts (prompt-disjoint)"}
    )
    test_images: Count | None = field(
        default=None, metadata={"help": "or an exact target count of test images (whole prompts, so >= this)"}
    )
    split_salt: str = field(default="sdg", metadata={"help": "changes which prompts go to test"})
    split_from: Literal["records", "fraction"] = field(
        default="records",
        metadata={
            "help": (
                "Which split wins: 'records' keeps a split a record carries (from sdg generate) and "
                "splits only the rest by test_fraction; 'fraction' re-splits every record."
            )
        },
    )
    image_roots: list[str] | None = field(
        default=None,
        metadata={
            "flag": "--image-root",
            "help": (
                "Folder that image_path may point into (repeatable). Default: the records file's folder. Paths "
                "that leave the allowed folders (.., absolute paths, symlinks) are rejected."
            ),
        },
    )
    max_pixels: Positive = field(
        default=MAX_PIXELS,
        metadata={"help": "images whose header declares more are rejected (no decompression bombs)"},
    )
    epochs: Positive = field(default=3, metadata={"help": "SFT copies per image, jittered after the first"})
    jitter: Count = field(default=10, metadata={"help": "jitter amplitude in grid units"})
    jitter_seed: Count = field(default=42, metadata={"help": "seeds the jitter with the image id and epoch"})
    prompt_template: str | None = field(
        default=None, metadata={"help": "detector user prompt file ({caption}); default prompts/detector_v1.txt"}
    )
    license: str = field(default="cc-by-nc-4.0", metadata={"help": "written to the dataset card"})
    pretty_name: str = field(default="SDG: Structured Defect Grounding", metadata={"help": "the dataset card's title"})
    max_shard_mb: Positive = field(default=500, metadata={"help": "parquet shards of at most this many MB of input"})
    rows_per_group: Positive = field(
        default=256, metadata={"help": "row groups hold whole images (all their pairs), at most this many images"}
    )
    max_group_mb: Positive = field(
        default=64,
        metadata={"help": "... and about this many MB of image bytes (two are held: one written, one read)"},
    )
    workers: Count = field(
        default=0, metadata={"help": "threads that read and check images ahead of the writer; 0: one per CPU core"}
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"BuildConfig.test_fraction must be in [0, 1), got {self.test_fraction}")
        JitterConfig(self.epochs, self.jitter, self.jitter_seed)  # validates
        if self.split_from not in ("records", "fraction"):
            raise ValueError(f"BuildConfig.split_from must be 'records' or 'fraction', got {self.split_from!r}")
        if self.workers < 0:
            raise ValueError(f"BuildConfig.workers must be >= 0 (0: one per CPU core), got {self.workers}")


# ------------------------------------------------------------------ features (datasets schema, with HF metadata)
def _features():
    """The one schema of both tables; each config shows some of its columns (:data:`sdg_data.io.arrow.VIEWS`)."""
    from datasets import Features, Image, List, Value

    defect = {
        "box_2d": List(Value("int32"), length=4),
        "label": Value("string"),
        "description": Value("string"),
        "importance": Value("int32"),
    }
    content = List({"type": Value("string"), "text": Value("string")})
    messages = List({"role": Value("string"), "content": content})
    return Features(
        {
            "image_id": Value("string"),
            "epoch": Value("int32"),  # the SFT pair; 0 on the row that also carries the per-image columns
            "caption": Value("string"),
            "generator": Value("string"),
            "images": List(Image()),
            "seed": Value("int64"),
            "split": Value("string"),
            "width": Value("int32"),
            "height": Value("int32"),
            "defects": List({**defect, "provenance": Value("string")}),
            "think": Value("string"),
            "provenance": Value("string"),  # the record's
            "messages": messages,  # sft
            "pair": Value("string"),  # sft: the pair's provenance (epoch, jitter offsets, seed, template)
            "prompt": messages,  # grpo
            "gt_defects": List(defect),  # grpo
        }
    )


def _defect_rows(rec: ImageRecord, provenance: bool = False) -> list[dict[str, Any]]:
    rows = []
    for d in rec.defects:
        row = {"box_2d": d.box.to_grid(), "label": d.label, "description": d.description, "importance": d.importance}
        if provenance:
            row["provenance"] = json.dumps(d.provenance, ensure_ascii=False) if d.provenance else None
        rows.append(row)
    return rows


# ------------------------------------------------------------------ shard writing
class _ShardWriter:
    """Parquet shards of at most ``max_bytes`` (by input size), written under temporary names. The build names them
    ``{split}-{fingerprint}-0000i-of-0000n.parquet`` once every shard is written (see :func:`_publish`).

    The image bytes reach parquet as a dictionary built here: each image once, the rows pointing at it by index, so
    the writer neither copies an image once per pair nor hashes it to find the repeats (that was a third of a
    build's time). The files do not store the arrow schema (which would hand readers that dictionary type); they
    carry the ``datasets`` features instead, so every reader sees a plain ``binary`` column and ``datasets`` its
    ``Image`` feature."""

    def __init__(self, folder: Path, split: str, schema: pa.Schema, max_bytes: int):
        self.folder, self.split, self.max_bytes = folder, split, max_bytes
        self.metadata = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
        i = schema.get_field_index("images")
        image = pa.struct([("bytes", pa.dictionary(pa.int32(), pa.binary())), ("path", pa.string())])
        self.image_field = pa.field("images", pa.list_(image))
        self.image_index = i
        self.rest = schema.remove(i).remove_metadata()  # every column but the images: built from the rows
        self.schema = self.rest.insert(i, self.image_field)
        self.paths: list[Path] = []
        self.writer: pq.ParquetWriter | None = None
        self.size = 0
        self.rows = 0
        check_output(folder / "x")  # data/<split>/ is no link (planted, it would take the shards elsewhere)
        folder.mkdir(parents=True, exist_ok=True)

    def _open(self) -> None:
        path = self.folder / f".{self.split}-{len(self.paths):05d}.{os.getpid()}.parquet.tmp"
        check_output(path)
        self.paths.append(path)
        self.writer = pq.ParquetWriter(
            path,
            self.schema,
            # text compresses; PNG / JPEG / WebP bytes do not, and zstd over them only costs time
            compression={c: "none" if c == _IMAGE_BYTES else "zstd" for c in _leaf_columns(self.schema)},
            use_dictionary=[_IMAGE_BYTES],
            dictionary_pagesize_limit=256 << 20,
            write_statistics=False,
            store_schema=False,
        )
        self.writer.add_key_value_metadata(self.metadata)  # the datasets features (``huggingface``)
        self.behind = WriteBehind(path)
        self.size = 0

    def _images(self, rows: list[dict[str, Any]]) -> pa.Array:
        """The ``images`` column: the distinct images of these rows as a dictionary of their bytes, and each row's
        list of indices into it. Distinct by content (the SHA-256 the check took): two records with the same image
        share one entry, which parquet needs, since a dictionary with a repeated value makes pyarrow give up on the
        dictionary for the whole row group and store the image once per pair."""
        seen: dict[bytes, int] = {}
        values: list[bytes] = []
        index: list[int] = []
        names: list[str] = []
        offsets = [0]
        for row in rows:
            for cell in row["images"]:
                at = seen.get(cell["sha256"])
                if at is None or values[at] != cell["bytes"]:  # compared in full only for a repeated image
                    at = seen[cell["sha256"]] = len(values)
                    values.append(cell["bytes"])
                index.append(at)
                names.append(cell["path"])
            offsets.append(len(index))
        data = pa.DictionaryArray.from_arrays(pa.array(index, pa.int32()), pa.array(values, pa.binary()))
        cells = pa.StructArray.from_arrays([data, pa.array(names, pa.string())], names=["bytes", "path"])
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), cells, type=self.image_field.type)

    def write(self, rows: list[dict[str, Any]], nbytes: int) -> None:
        if not rows:
            return
        if self.writer is None or (self.size > 0 and self.size + nbytes > self.max_bytes):
            self.close_current()
            self._open()
        rest = pa.Table.from_pylist([{k: v for k, v in r.items() if k != "images"} for r in rows], schema=self.rest)
        self.writer.write_table(rest.add_column(self.image_index, self.image_field, self._images(rows)))
        self.behind.flush()  # this row group is final: start putting it on disk while the next one is made
        self.size += nbytes
        self.rows += len(rows)

    def close_current(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.behind.flush()
            self.behind.close()

    def finish(self) -> list[Path]:
        """The temporary shard files, closed; none for a split without rows (the card leaves it out)."""
        self.close_current()
        return list(self.paths)

    def discard(self) -> None:
        self.close_current()
        for p in self.paths:
            remove_output(p)


def _leaf_columns(schema: pa.Schema) -> list[str]:
    """Parquet's dotted leaf column paths (``images.list.element.bytes``) of an arrow schema."""

    def walk(prefix: str, t: pa.DataType) -> list[str]:
        if pa.types.is_struct(t):
            return [c for f in t for c in walk(f"{prefix}.{f.name}", f.type)]
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            return walk(f"{prefix}.list.element", t.value_type)
        return [prefix]

    return [c for f in schema for c in walk(f.name, f.type)]


class _Fingerprint:
    """A short hash of everything a build's shards are made of (each kept record, the SHA-256 of its image bytes,
    the settings and the schema), fed as the build goes: part of every shard name and card pattern, so ``datasets``
    (which keys its cache by the folder name and the card's patterns) never serves one build's cached rows for
    another. The build is deterministic, so equal inputs give equal shards; nothing is read back to hash it."""

    def __init__(self, cfg: BuildConfig, template: str):
        self.h = hashlib.blake2b(digest_size=8)
        from sdg_data import SCHEMA_VERSION, __version__

        head = [asdict(cfg), template, str(_features()), __version__, SCHEMA_VERSION]  # a new sdg: new names
        self.h.update(json.dumps(head, sort_keys=True, default=str).encode())

    def add(self, rec: ImageRecord, image_digest: bytes) -> None:
        self.h.update(json.dumps(rec.to_json(), sort_keys=True, ensure_ascii=False).encode())
        self.h.update(image_digest)

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def _publish(out: Path, temps: dict[str, list[Path]], fp: str) -> dict[str, list[str]]:
    """Rename the temporary shards to their final names (beside the previous build's, which stay readable); the
    files of each table."""
    files: dict[str, list[str]] = defaultdict(list)
    for table, paths in temps.items():
        n = len(paths)
        for i, p in enumerate(paths):
            dst = p.parent / f"{table}-{fp}-{i:05d}-of-{n:05d}.parquet"
            check_output(dst)
            os.replace(p, dst)
            files[table].append(str(dst.relative_to(out)))
    return files


def config_files(tables: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each config's files: those of the tables its splits come from."""
    return {c: [f for sp in v["splits"] for f in tables.get(sp, [])] for c, v in VIEWS.items()}


def _remove_stale(out: Path, keep: dict[str, list[str]]) -> int:
    """After the new card is in place: delete shards no card points at any more (earlier builds, crashed temps)."""
    kept = {out / f for fs in keep.values() for f in fs}
    removed = 0
    data = out / "data"
    if not data.is_dir() or data.is_symlink():
        return 0
    for p in files_below(data):  # never through a link: a planted data/x -> elsewhere loses nothing there
        if p.parent.parent == data and p not in kept and (p.suffix == ".parquet" or p.name.endswith(".parquet.tmp")):
            removed += remove_output(p)
    for d in data.iterdir():
        if d.is_dir() and not d.is_symlink() and not any(d.iterdir()):
            d.rmdir()
    return removed


# ------------------------------------------------------------------ build
def _image_cell(rec: ImageRecord, path: Path, max_pixels: int) -> dict[str, Any]:
    """The image column's cell: exactly the bytes that were verified as an image of the record's size, and their
    SHA-256 (which the writer dedupes by and the fingerprint takes; not a column)."""
    checked = read_verified(path, (rec.width, rec.height), max_pixels)
    data, digest = checked.data, checked.digest
    if checked.format == "PNG" and (cut := png.end_of_image(data)) is not None and cut < len(data):
        data = data[:cut]  # data after IEND: no decoder reads it, no check covered it, so it is not stored
        digest = hashlib.sha256(data).digest()
    return {"bytes": data, "path": path.name, "sha256": digest}


def _prefetched(loaded: list, cfg: BuildConfig):
    """(line, record, image cell or ImageError) in input order, the images read and verified by a thread pool
    ahead of the writer (file reads, hashing and the PNG check release the GIL, so each core checks an image while
    the writer writes). The threads work up to about a row group ahead (``max_group_mb`` of image bytes, at most
    ``rows_per_group`` images, at least two per thread), so they go on checking while the writer writes a row
    group, and memory stays bounded whatever the number of images."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    workers = cfg.workers or os.cpu_count() or 2
    budget = cfg.max_group_mb << 20  # image bytes held ahead: about one row group
    floor = max(8, 2 * workers)  # images in flight however large they are
    cap = max(floor, cfg.rows_per_group)  # and at most a row group's images however small

    def job(item):
        _, rec, path = item
        try:
            return _image_cell(rec, path, cfg.max_pixels)
        except ImageError as exc:
            return exc

    def size(path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return 0  # the job says what is wrong

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="build-images") as pool:
        pending: deque = deque()
        held = 0  # bytes of the images in flight or done and not yet handed on
        for item in loaded:
            n = size(item[2])
            pending.append((item, n, pool.submit(job, item)))
            held += n
            while len(pending) > floor and (held > budget or len(pending) > cap):
                (line, rec, _), n, fut = pending.popleft()
                held -= n
                yield line, rec, fut.result()
        while pending:
            (line, rec, _), _, fut = pending.popleft()
            yield line, rec, fut.result()


def load_distilled(
    path: Path, image_roots: list[str] | None = None
) -> tuple[list[tuple[int, ImageRecord, Path]], list[dict[str, Any]], int]:
    return screen_records(path, ("caption", "think"), "build", image_roots or (), annotated=True)


class _DatasetWriter:
    """The rows of each verified image in the train or test table, buffered and written to shards: a train image
    gets a row per SFT pair (the first also carries the annotation and GRPO columns), a test image one row."""

    def __init__(self, out: Path, cfg: BuildConfig):
        self.cfg, self.tpl = cfg, cfg.prompt_template
        self.tpl_id = template_id(self.tpl)
        self.jitter = JitterConfig(cfg.epochs, cfg.jitter, cfg.jitter_seed)
        max_bytes = cfg.max_shard_mb << 20
        self.group_bytes = cfg.max_group_mb << 20
        schema = _features().arrow_schema
        self.writers = {t: _ShardWriter(out / "data" / t, t, schema, max_bytes) for t in TABLES}
        self.buffers: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.sizes: Counter[str] = Counter()
        self.kept: list[ImageRecord] = []
        self.rows: Counter[str] = Counter()  # per config/split, as the card will show them
        self.fingerprint = _Fingerprint(cfg, self.tpl_id)
        self.unique_image_bytes = self.train_image_bytes = self.sft_text_bytes = self.text_bytes = 0

    def _put(self, table: str, row: dict[str, Any], nbytes: int) -> None:
        self.buffers[table].append(row)
        self.sizes[table] += nbytes

    def flush(self, table: str) -> None:
        if self.buffers[table]:
            self.writers[table].write(self.buffers[table], self.sizes[table])
            self.buffers[table] = []
            self.sizes[table] = 0

    def add(self, rec: ImageRecord, image: dict[str, Any], nbytes: int) -> None:
        """The rows of one verified image."""
        self.kept.append(rec)
        self.unique_image_bytes += nbytes
        first = {
            "image_id": rec.image_id,
            "epoch": 0,
            "caption": rec.caption,
            "generator": rec.generator,
            "images": [image],
            "seed": rec.seed,
            "split": rec.split,
            "width": rec.width,
            "height": rec.height,
            "defects": _defect_rows(rec, provenance=True),
            "think": rec.think,
            "provenance": json.dumps(rec.provenance, ensure_ascii=False),
        }
        self.rows[f"annotations/{rec.split}"] += 1
        # the text besides the SFT messages (counted as they are made): what 'plus text' in the size ratio adds up
        self.text_bytes += sum(len(str(v or "").encode()) for v in (rec.caption, rec.think, first["provenance"]))
        self.text_bytes += sum(len(d.description.encode()) + 16 for d in rec.defects)
        if rec.split == "test":
            self.rows["test/test"] += 1
            self._put("test", first, nbytes)
            if len(self.buffers["test"]) >= self.cfg.rows_per_group or self.sizes["test"] >= self.group_bytes:
                self.flush("test")
            return
        self.train_image_bytes += nbytes
        self.rows["grpo/train"] += 1
        first["prompt"] = prompt_messages(rec.caption, self.tpl)
        first["gt_defects"] = _defect_rows(rec)
        self._add_pairs(rec, first, nbytes)

    def _add_pairs(self, rec: ImageRecord, first: dict[str, Any], nbytes: int) -> None:
        """The jittered pairs of one image, kept in one row group so its image is stored once."""
        for epoch, response, offsets in pair_responses(rec, self.jitter):
            pprov = {"epoch": epoch, "jitter_offsets": offsets, "jitter_seed": self.cfg.jitter_seed,
                     "prompt_template": self.tpl_id}  # fmt: skip
            msgs = sft_messages(rec.caption, response, self.tpl)
            text = sum(len(b["text"].encode()) for m in msgs for b in m["content"] if b["text"])
            self.sft_text_bytes += text
            self.text_bytes += text
            base = first if epoch == 0 else {k: first[k] for k in ("image_id", "caption", "generator", "images")}
            self._put("train", {**base, "epoch": epoch, "messages": msgs, "pair": json.dumps(pprov)}, 0)
            self.rows["sft/train"] += 1
        self.sizes["train"] += nbytes  # the image once: the pairs share it in one row group
        if len(self.buffers["train"]) >= self.cfg.rows_per_group * self.cfg.epochs or (
            self.sizes["train"] >= self.group_bytes
        ):
            self.flush("train")

    def finish(self) -> dict[str, list[Path]]:
        """Flush and close every shard; the temporary shard files of each table that has rows."""
        temps = {}
        for table, writer in self.writers.items():
            self.flush(table)
            paths = writer.finish()
            if paths:
                temps[table] = paths
        return temps

    def discard(self) -> None:
        for w in self.writers.values():
            w.discard()


def _split(records: list[ImageRecord], cfg: BuildConfig) -> tuple[dict[str, int], list[str]]:
    """Assign the splits (:mod:`sdg_data.splits`); a warning when the records' splits make test_fraction moot."""
    warnings: list[str] = []
    given = sum(r.split is not None for r in records)
    if cfg.split_from == "records" and records and given == len(records) and cfg.test_fraction != PAPER_TEST_FRACTION:
        warnings.append(
            f"every record already carries a split (from generate), so test_fraction {cfg.test_fraction} changes "
            "nothing; pass --split-from fraction to re-split by it"
        )
    info = assign_splits(
        records, cfg.test_fraction, cfg.test_images, cfg.split_salt, keep_given=cfg.split_from == "records"
    )
    return info, warnings


def build_dataset(records_path: str | Path, out_dir: str | Path, cfg: BuildConfig, progress: bool = True) -> dict:
    """Write the dataset folder; returns the build summary (also ``meta/build.summary.json``)."""

    t0 = time.perf_counter()
    records_path, out = Path(records_path), output_root(out_dir)
    loaded, rejects, n_read = load_distilled(records_path, cfg.image_roots)
    if n_read == 0:
        raise ValueError(f"{records_path}: no records (an empty file); nothing to build")
    split_info, warnings = _split([r for _, r, _ in loaded], cfg)
    ds = _DatasetWriter(out, cfg)
    report = StageReport("build", read=n_read, rejects=rejects)
    try:
        stream = _prefetched(loaded, cfg)
        for line, rec, got in progress_bar(
            iterable=stream, total=len(loaded), desc="build", unit="img", enabled=progress
        ):
            if isinstance(got, ImageError):
                reason = f"record {rec.image_id!r} field 'image_path': {got}"
                report.reject(reason, rec.image_id, f"{records_path}:{line}", rec.to_json(), line=line)
                continue
            ds.add(rec, got, len(got["bytes"]))
            ds.fingerprint.add(rec, got["sha256"])
        temps = ds.finish()
    except BaseException:
        ds.discard()
        raise
    report.kept = len(ds.kept)
    if not ds.kept:
        for p in (p for paths in temps.values() for p in paths):
            remove_output(p)
        # the failed run's own place: a good dataset already in OUT keeps its meta/ and stays readable
        failed = failed_run_folder(out / "meta")
        report.write(failed)
        first = "; ".join(sorted({r.reason for r in report.rejects})[:3])
        raise ValueError(
            f"{records_path}: built 0 of {n_read} records ({report.rejected} rejected, see "
            f"{report.paths(failed)[0]}); first reasons: {first}"
        )
    return _publish_build(out, records_path.parent, ds, temps, report, split_info, warnings, t0)


def _publish_build(out, base, ds, temps, report, split_info, warnings, t0) -> dict[str, Any]:
    """Name the shards by their fingerprint, write the reports and the card (the swap), remove old shards."""
    cfg = ds.cfg
    fp = ds.fingerprint.hexdigest()
    tables = _publish(out, temps, fp)
    files = config_files(tables)
    counts = {f"{c}/{sp}": ds.rows[f"{c}/{sp}"] for c, v in VIEWS.items() for sp in v["splits"]}
    for key, n in counts.items():
        if not n:
            config, split = key.split("/")
            warnings.append(f"config {config!r} has no {split!r} rows; the card leaves that split out")
    no_test = no_test_split(counts, cfg, len(ds.kept))
    if no_test:
        warnings.append(no_test)
    copied = _copy_stage_reports(base, out / "meta")
    size = {t: sum((out / f).stat().st_size for f in fs) for t, fs in tables.items()}
    total = sum(size.values())
    text_and_images = ds.train_image_bytes + ds.sft_text_bytes
    report.extras = {
        "built": len(ds.kept),
        "splits": dict(Counter(r.split for r in ds.kept)),
        "rows": counts,
        "split_assignment": split_info,
        "unique_image_bytes": ds.unique_image_bytes,
        "text_bytes": ds.text_bytes,
        "bytes_by_table": size,
        # the whole folder's shards over (each image once + the text): 1.0 would be no overhead at all
        "size_ratio": round(total / max(1, ds.unique_image_bytes + ds.text_bytes), 4),
        "sft": {"bytes": size.get("train", 0), "unique_image_bytes": ds.train_image_bytes,
                "text_bytes": ds.sft_text_bytes, "ratio": round(size.get("train", 0) / max(1, text_and_images), 4)},
        "total_bytes": total,
        "fingerprint": fp,
        "stage_reports": copied,
        "tables": dict(tables),
        "files": files,
        "prompt_template": ds.tpl_id,
        "config": asdict(cfg),
        "warnings": warnings,
        "seconds": round(time.perf_counter() - t0, 2),
    }  # fmt: skip
    summary = report.write(out / "meta")
    write_text(out / "README.md", dataset_card(summary, ds.kept, cfg))  # the swap: readers now see this build
    summary["stale_files_removed"] = _remove_stale(out, files)
    return summary


def no_test_split(rows: dict[str, int], cfg: BuildConfig, built: int) -> str | None:
    """What to say when a build has no held-out images: the scoring commands read ``--split test`` by default and
    refuse such a folder rather than score training images; this says why and what to do (the build's last line
    and the card)."""
    if rows.get("annotations/test", 0) or not built:
        return None
    asked = (
        f"test images {cfg.test_images}" if cfg.test_images is not None else f"test fraction {cfg.test_fraction:.4g}"
    )
    why = f"none of its {built} images went to test at {asked}; records that carry a split keep it"
    return (
        f"the dataset has no test split ({why}): sdg eval, reward, detect and refine read --split test and will "
        "refuse this folder. Build from more images, raise --test-fraction or set --test-images, or score the "
        "training images on purpose with --split train (the report then says so)"
    )


def _copy_stage_reports(base: Path, meta: Path) -> dict[str, int]:
    """Earlier stages' reports travel with the dataset (and to the Hub with it): only what a stage wrote, read as
    sidecars (regular files, capped, never through a link) and written anew from what was parsed: a summary that
    is a stage summary, the rejects lines in the one schema. A link to a secret, a FIFO or a malformed line never
    reaches the dataset; skipped lines are counted."""
    from sdg_data.io.report import read_reports

    summaries, by_stage, skipped = read_reports(base)
    for stage, summary in summaries.items():
        if stage != "build":
            write_json(meta / f"{stage}{SUMMARY_SUFFIX}", summary)
    for stage, rows in by_stage.items():
        if stage != "build":
            write_jsonl(meta / f"{stage}{REJECTS_SUFFIX}", rows)
    return {"summaries": len(summaries), "rejects": sum(map(len, by_stage.values())), "skipped_lines": skipped}


def card_configs(rows: dict[str, int], fp: str) -> list[dict[str, Any]]:
    """The card's ``configs``: each config's splits with rows (a pattern naming this build's shards of the table the
    split comes from, so a rebuild changes the patterns and with them the ``datasets`` cache key), its columns, and
    the one-row-per-image filter where it has one. Splits without rows are left out: ``datasets`` refuses a declared
    split that matches no data."""
    out = []
    for config, view in VIEWS.items():
        files = [
            {"split": split, "path": f"data/{split}/{split}-{fp}-*.parquet"}
            for split in view["splits"]
            if rows.get(f"{config}/{split}", 0) > 0
        ]
        if files:
            entry: dict[str, Any] = {"config_name": config, "data_files": files, "columns": list(view["columns"])}
            if view["first_pair"]:
                entry["filters"] = [list(f) for f in FIRST_PAIR]
            out.append(entry)
    return out


def _composition(records: list[ImageRecord]) -> tuple[Counter, Counter]:
    """Images per kind (clean, artifact-only, misalignment-only, both) and per teacher model."""
    comp: Counter = Counter()
    teachers: Counter = Counter()
    for r in records:
        labels = {d.label for d in r.defects}
        comp["clean" if not labels else "both" if len(labels) == 2 else f"{labels.pop()}-only"] += 1
        teachers[(r.provenance.get("distill") or {}).get("model", "unknown")] += 1
    return comp, teachers


def _configs_table(rows: dict[str, int], cfg: BuildConfig) -> list[str]:
    return [
        "| config | split | rows | what a row is |",
        "|---|---|---|---|",
        f"| annotations | train / test | {rows['annotations/train']} / {rows['annotations/test']} "
        "| one image, its defects and the teacher's reasoning |",
        f"| sft | train | {rows['sft/train']} | one (prompt, response) pair; {cfg.epochs} per image, boxes "
        f"jittered by up to {cfg.jitter} grid units after the first |",
        f"| grpo | train | {rows['grpo/train']} | one prompt with the ground-truth defects the reward reads |",
        f"| test | test | {rows['test/test']} | one held-out image with ground truth (`sdg eval --gt`) |",
    ]


def dataset_card(summary: dict[str, Any], records: list[ImageRecord], cfg: BuildConfig) -> str:
    """README.md: the YAML header ``datasets`` reads (configs, license) and a card written from the build."""
    header = {
        "license": cfg.license,
        "pretty_name": cfg.pretty_name,
        "task_categories": ["object-detection", "image-text-to-text"],
        "tags": ["text-to-image", "defect-detection", "grounding", "sdg"],
        "configs": card_configs(summary["rows"], summary["fingerprint"]),
    }
    import yaml

    rows = summary["rows"]
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).rstrip(),
        "---",
        "",
        *_card_body(summary, records, cfg, rows),
    ]
    return "\n".join(lines)


def _card_body(summary: dict[str, Any], records: list[ImageRecord], cfg: BuildConfig, rows: dict[str, int]):
    """The card's text: what the data is, its configs, composition, split, provenance and license."""
    comp, teachers = _composition(records)
    n = max(1, len(records))
    return [
        f"# {cfg.pretty_name}",
        "",
        "Structured Defect Grounding data for text-to-image feedback: each generated image carries a list of",
        "defects, each a box on a 0-1000 grid (xyxy), a label (`artifact` or `misalignment`), an English",
        "description and an importance from 1 to 100. An empty list marks a clean image. Built with `sdg build`.",
        "",
        "## Configs",
        "",
        *_configs_table(rows, cfg),
        "",
        "```python",
        "from datasets import load_dataset",
        'sft = load_dataset("PATH_OR_REPO", "sft", split="train")',
        "```",
        "",
        "## Composition",
        "",
        "| images | clean | artifact-only | misalignment-only | both |",
        "|---|---|---|---|---|",
        f"| {len(records)} | "
        + " | ".join(f"{100 * comp[k] / n:.1f}%" for k in ("clean", "artifact-only", "misalignment-only", "both"))
        + " |",
        "",
        "The train / test split is prompt-disjoint: every image of a prompt is on the same side.",
        *(
            ["", f"**No test split.** {no_test[0].upper()}{no_test[1:]}."]
            if (no_test := no_test_split(rows, cfg, len(records)))
            else []
        ),
        "",
        "## Provenance",
        "",
        "Teachers that wrote the reasoning, descriptions and importance: "
        + ", ".join(f"`{k}` ({v})" for k, v in teachers.most_common())
        + ".",
        "Records written by `template-teacher/v1` come from the offline template writer, not a VLM: use them to",
        "test pipelines, not to train detectors meant for use.",
        f"Detector prompt template: `{summary['prompt_template']}`. Build settings: `meta/build.summary.json`;",
        "each stage's rejects and counts: `meta/<stage>.rejects.jsonl`, `meta/<stage>.summary.json`.",
        "",
        "## License",
        "",
        f"{cfg.license}.",
        "",
    ]
