"""``sdg build``: distilled records -> a Hugging Face dataset folder (parquet shards under ``data/`` and a card).

Configs (each loadable with ``datasets.load_dataset(DIR, NAME)``, offline):

- ``annotations``  one row per image, both splits: the image, its metadata, defects on the 0-1000 grid, think;
- ``sft``          the jittered pairs of the train split, trl's conversational VLM form (``messages``, ``images``);
- ``grpo``         one row per train image: ``prompt``, ``images`` and ``gt_defects`` (what the core reward reads);
- ``test``         the held-out split with ground truth, in the record form ``sdg eval --gt`` reads.

Image bytes are copied from disk untouched. In ``sft`` the pairs of one image share a row group and the image
column is dictionary-encoded, so an image is stored once however many pairs use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sdg_data.detector_prompt import prompt_messages, sft_messages, template_id
from sdg_data.jitter import JitterConfig, pair_responses
from sdg_data.jsonl import screen_records, write_json, write_jsonl
from sdg_data.records import ImageRecord


PAPER_TEST_FRACTION = 1151 / (28945 + 1151)
CONFIGS = ("annotations", "sft", "grpo", "test")
_IMAGE_BYTES = "images.list.element.bytes"


@dataclass
class BuildConfig:
    test_fraction: float = PAPER_TEST_FRACTION  # share of images held out, by whole prompts (prompt-disjoint)
    test_images: int | None = None  # or an exact target count of test images (whole prompts, so >= this)
    split_salt: str = "sdg"  # changes which prompts go to test
    keep_existing_split: bool = True  # records that already carry a split (set at generation) keep it
    epochs: int = 3
    jitter: int = 10
    jitter_seed: int = 42
    prompt_template: str | None = None  # detector user prompt; default sdg_data/prompts/detector_v1.txt
    license: str = "cc-by-nc-4.0"
    pretty_name: str = "SDG: Structured Defect Grounding"
    max_shard_mb: int = 500
    rows_per_group: int = 256  # sft row groups hold whole images (all their pairs)

    def __post_init__(self) -> None:
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"BuildConfig.test_fraction must be in [0, 1), got {self.test_fraction}")
        JitterConfig(self.epochs, self.jitter, self.jitter_seed)  # validates


# ------------------------------------------------------------------ features (datasets schema, with HF metadata)
def _features(name: str):
    from datasets import Features, Image, List, Value

    defect = {
        "box_2d": List(Value("int32"), length=4),
        "label": Value("string"),
        "description": Value("string"),
        "importance": Value("int32"),
    }
    content = List({"type": Value("string"), "text": Value("string")})
    messages = List({"role": Value("string"), "content": content})
    common = {"image_id": Value("string"), "caption": Value("string"), "generator": Value("string")}
    if name == "annotations":
        return Features(
            {
                **common,
                "image": Image(),
                "seed": Value("int64"),
                "split": Value("string"),
                "width": Value("int32"),
                "height": Value("int32"),
                "defects": List({**defect, "provenance": Value("string")}),
                "think": Value("string"),
                "provenance": Value("string"),
            }
        )
    if name == "sft":
        return Features(
            {
                "image_id": Value("string"),
                "epoch": Value("int32"),
                "images": List(Image()),
                "messages": messages,
                "provenance": Value("string"),
            }
        )
    if name == "grpo":
        return Features({**common, "images": List(Image()), "prompt": messages, "gt_defects": List(defect)})
    return Features({**common, "image": Image(), "defects": List(defect)})


def _defect_rows(rec: ImageRecord, provenance: bool = False) -> list[dict[str, Any]]:
    rows = []
    for d in rec.defects:
        row = {"box_2d": d.box.to_grid(), "label": d.label, "description": d.description, "importance": d.importance}
        if provenance:
            row["provenance"] = json.dumps(d.provenance, ensure_ascii=False) if d.provenance else None
        rows.append(row)
    return rows


# ------------------------------------------------------------------ split
def _prompt_key(caption: str) -> str:
    return " ".join(caption.lower().split())


def assign_splits(records: list[ImageRecord], cfg: BuildConfig) -> dict[str, int]:
    """Give every record a split, whole prompts at a time; returns counts of what was decided how."""
    by_prompt: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in records:
        by_prompt[_prompt_key(r.caption or "")].append(r)
    fixed: dict[str, str] = {}
    conflicts = 0
    if cfg.keep_existing_split:
        for key, group in by_prompt.items():
            given = Counter(r.split for r in group if r.split)
            if given:
                fixed[key] = given.most_common(1)[0][0]
                conflicts += int(len(given) > 1)
    free = [k for k in by_prompt if k not in fixed]
    free.sort(key=lambda k: hashlib.sha256(f"{cfg.split_salt}\x1f{k}".encode()).hexdigest())
    n_images = len(records)
    target = cfg.test_images if cfg.test_images is not None else round(cfg.test_fraction * n_images)
    have = sum(len(by_prompt[k]) for k, s in fixed.items() if s == "test")
    for k in free:
        if have < target:
            fixed[k] = "test"
            have += len(by_prompt[k])
        else:
            fixed[k] = "train"
    for key, group in by_prompt.items():
        for r in group:
            r.split = fixed[key]
    return {
        "prompts": len(by_prompt),
        "prompts_with_given_split": len(by_prompt) - len(free),
        "split_conflicts_resolved": conflicts,
    }


# ------------------------------------------------------------------ shard writing
class _ShardWriter:
    """Parquet shards of at most ``max_bytes`` (by input size), named ``{split}-0000i-of-0000n.parquet``."""

    def __init__(self, folder: Path, split: str, schema: pa.Schema, max_bytes: int, dictionary_images: bool):
        self.folder, self.split, self.schema, self.max_bytes = folder, split, schema, max_bytes
        self.dictionary_images = dictionary_images
        self.paths: list[Path] = []
        self.writer: pq.ParquetWriter | None = None
        self.size = 0
        self.rows = 0
        folder.mkdir(parents=True, exist_ok=True)

    def _open(self) -> None:
        path = self.folder / f".{self.split}-{len(self.paths):05d}.parquet.tmp"
        self.paths.append(path)
        self.writer = pq.ParquetWriter(
            path,
            self.schema,
            compression="zstd",
            use_dictionary=[_IMAGE_BYTES] if self.dictionary_images else False,
            dictionary_pagesize_limit=256 << 20,
            write_statistics=False,
        )
        self.size = 0

    def write(self, rows: list[dict[str, Any]], nbytes: int) -> None:
        if not rows:
            return
        if self.writer is None or (self.size > 0 and self.size + nbytes > self.max_bytes):
            self.close_current()
            self._open()
        self.writer.write_table(pa.Table.from_pylist(rows, schema=self.schema))
        self.size += nbytes
        self.rows += len(rows)

    def close_current(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def finish(self) -> list[Path]:
        self.close_current()
        if not self.paths:  # an empty split still gets one (empty) shard so the config loads
            self._open()  # schema only, no row group: readers see zero rows
            self.close_current()
        n = len(self.paths)
        final = []
        for i, p in enumerate(self.paths):
            dst = self.folder / f"{self.split}-{i:05d}-of-{n:05d}.parquet"
            os.replace(p, dst)
            final.append(dst)
        return final


# ------------------------------------------------------------------ build
def _image_cell(rec: ImageRecord, base: Path) -> tuple[dict[str, Any], int]:
    p = Path(rec.image_path)
    p = p if p.is_absolute() else base / p
    data = p.read_bytes()
    return {"bytes": data, "path": p.name}, len(data)


def load_distilled(path: Path) -> tuple[list[tuple[int, ImageRecord]], list[dict[str, Any]], int]:
    ok, rejects, n = screen_records(path, ("caption", "think"), "build")
    return [(line, rec) for line, rec, _ in ok], rejects, n


def build_dataset(records_path: str | Path, out_dir: str | Path, cfg: BuildConfig, progress: bool = True) -> dict:
    """Write the dataset folder; returns the build summary (also ``meta/build.json``)."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    records_path, out = Path(records_path), Path(out_dir)
    base = records_path.parent
    loaded, rejects, n_read = load_distilled(records_path)
    records = [r for _, r in loaded]
    split_info = assign_splits(records, cfg)
    jitter = JitterConfig(cfg.epochs, cfg.jitter, cfg.jitter_seed)
    tpl = cfg.prompt_template
    tpl_id = template_id(tpl)
    for name in CONFIGS:
        shutil.rmtree(out / "data" / name, ignore_errors=True)
    max_bytes = cfg.max_shard_mb << 20
    schemas = {name: _features(name).arrow_schema for name in CONFIGS}
    writers = {
        ("annotations", "train"): _ShardWriter(
            out / "data" / "annotations", "train", schemas["annotations"], max_bytes, False
        ),
        ("annotations", "test"): _ShardWriter(
            out / "data" / "annotations", "test", schemas["annotations"], max_bytes, False
        ),
        ("sft", "train"): _ShardWriter(out / "data" / "sft", "train", schemas["sft"], max_bytes, True),
        ("grpo", "train"): _ShardWriter(out / "data" / "grpo", "train", schemas["grpo"], max_bytes, False),
        ("test", "test"): _ShardWriter(out / "data" / "test", "test", schemas["test"], max_bytes, False),
    }
    buffers: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    sizes: Counter[tuple[str, str]] = Counter()
    unique_image_bytes = 0
    train_image_bytes = 0
    sft_text_bytes = 0
    kept: list[ImageRecord] = []

    def flush(key: tuple[str, str], force: bool = False) -> None:
        if buffers[key] and (force or len(buffers[key]) >= cfg.rows_per_group):
            writers[key].write(buffers[key], sizes[key])
            buffers[key] = []
            sizes[key] = 0

    for rec in tqdm(records, desc="build", unit="img", disable=not progress):
        try:
            image, nbytes = _image_cell(rec, base)
        except OSError as exc:
            rejects.append({"image_id": rec.image_id, "stage": "build", "reason": f"image unreadable: {exc}"})
            continue
        kept.append(rec)
        unique_image_bytes += nbytes
        train_image_bytes += nbytes if rec.split == "train" else 0
        prov = json.dumps(rec.provenance, ensure_ascii=False)
        common = {"image_id": rec.image_id, "caption": rec.caption, "generator": rec.generator}
        key = ("annotations", rec.split)
        buffers[key].append(
            {
                **common,
                "image": image,
                "seed": rec.seed,
                "split": rec.split,
                "width": rec.width,
                "height": rec.height,
                "defects": _defect_rows(rec, provenance=True),
                "think": rec.think,
                "provenance": prov,
            }
        )
        sizes[key] += nbytes
        flush(key)
        if rec.split == "test":
            buffers[("test", "test")].append({**common, "image": image, "defects": _defect_rows(rec)})
            sizes[("test", "test")] += nbytes
            flush(("test", "test"))
            continue
        gt = _defect_rows(rec)
        buffers[("grpo", "train")].append(
            {**common, "images": [image], "prompt": prompt_messages(rec.caption, tpl), "gt_defects": gt}
        )
        sizes[("grpo", "train")] += nbytes
        flush(("grpo", "train"))
        for epoch, response, offsets in pair_responses(rec, jitter):
            pprov = {
                "epoch": epoch,
                "jitter_offsets": offsets,
                "jitter_seed": cfg.jitter_seed,
                "prompt_template": tpl_id,
            }
            msgs = sft_messages(rec.caption, response, tpl)
            sft_text_bytes += sum(len(b["text"].encode()) for m in msgs for b in m["content"] if b["text"])
            buffers[("sft", "train")].append(
                {
                    "image_id": rec.image_id,
                    "epoch": epoch,
                    "images": [image],
                    "messages": msgs,
                    "provenance": json.dumps(pprov),
                }
            )
        sizes[("sft", "train")] += nbytes  # the image once: the pairs share it in one row group
        if len(buffers[("sft", "train")]) >= cfg.rows_per_group * cfg.epochs:
            flush(("sft", "train"), force=True)
    files: dict[str, list[str]] = defaultdict(list)
    for key in writers:
        flush(key, force=True)
        for p in writers[key].finish():
            files[key[0]].append(str(p.relative_to(out)))
    counts = {f"{c}/{s}": w.rows for (c, s), w in writers.items()}
    write_jsonl(out / "meta" / "build_rejects.jsonl", rejects)
    for name in ("rejects.jsonl", "summary.json"):  # the distill stage's records travel with the dataset
        src = base / name
        if src.exists():
            shutil.copyfile(src, out / "meta" / f"distill_{name}")
    size = {c: sum((out / f).stat().st_size for f in fs) for c, fs in files.items()}
    summary = {
        "read": n_read,
        "built": len(kept),
        "rejected": len(rejects),
        "splits": dict(Counter(r.split for r in kept)),
        "rows": counts,
        "split_assignment": split_info,
        "unique_image_bytes": unique_image_bytes,
        "bytes_by_config": size,
        "sft": {
            "bytes": size.get("sft", 0),
            "unique_image_bytes": train_image_bytes,
            "text_bytes": sft_text_bytes,
            "ratio": round(size.get("sft", 0) / max(1, train_image_bytes + sft_text_bytes), 4),
        },
        "total_bytes": sum(size.values()),
        "prompt_template": tpl_id,
        "config": asdict(cfg),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if summary["read"] != summary["built"] + summary["rejected"]:
        raise AssertionError(f"counts do not reconcile: {summary}")
    write_json(out / "meta" / "build.json", summary)
    (out / "README.md").write_text(dataset_card(summary, kept, cfg), encoding="utf-8")
    return summary


def dataset_card(summary: dict[str, Any], records: list[ImageRecord], cfg: BuildConfig) -> str:
    """README.md: the YAML header ``datasets`` reads (configs, license) and a card written from the build."""
    header = {
        "license": cfg.license,
        "pretty_name": cfg.pretty_name,
        "task_categories": ["object-detection", "image-text-to-text"],
        "tags": ["text-to-image", "defect-detection", "grounding", "sdg"],
        "configs": [
            {
                "config_name": "annotations",
                "data_files": [
                    {"split": "train", "path": "data/annotations/train-*.parquet"},
                    {"split": "test", "path": "data/annotations/test-*.parquet"},
                ],
            },
            {"config_name": "sft", "data_files": [{"split": "train", "path": "data/sft/train-*.parquet"}]},
            {"config_name": "grpo", "data_files": [{"split": "train", "path": "data/grpo/train-*.parquet"}]},
            {"config_name": "test", "data_files": [{"split": "test", "path": "data/test/test-*.parquet"}]},
        ],
    }
    import yaml

    comp = Counter()
    teachers = Counter()
    for r in records:
        labels = {d.label for d in r.defects}
        comp["clean" if not labels else "both" if len(labels) == 2 else f"{labels.pop()}-only"] += 1
        teachers[(r.provenance.get("distill") or {}).get("model", "unknown")] += 1
    n = max(1, len(records))
    rows = summary["rows"]
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {cfg.pretty_name}",
        "",
        "Structured Defect Grounding data for text-to-image feedback: each generated image carries a list of",
        "defects, each a box on a 0-1000 grid (xyxy), a label (`artifact` or `misalignment`), an English",
        "description and an importance from 1 to 100. An empty list marks a clean image. Built with `sdg build`.",
        "",
        "## Configs",
        "",
        "| config | split | rows | what a row is |",
        "|---|---|---|---|",
        f"| annotations | train / test | {rows['annotations/train']} / {rows['annotations/test']} "
        "| one image, its defects and the teacher's reasoning |",
        f"| sft | train | {rows['sft/train']} | one (prompt, response) pair; {cfg.epochs} per image, boxes "
        f"jittered by up to {cfg.jitter} grid units after the first |",
        f"| grpo | train | {rows['grpo/train']} | one prompt with the ground-truth defects the reward reads |",
        f"| test | test | {rows['test/test']} | one held-out image with ground truth (`sdg eval --gt`) |",
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
        "",
        "## Provenance",
        "",
        "Teachers that wrote the reasoning, descriptions and importance: "
        + ", ".join(f"`{k}` ({v})" for k, v in teachers.most_common())
        + ".",
        "Records written by `template-teacher/v1` come from the offline template writer, not a VLM: use them to",
        "test pipelines, not to train detectors meant for use.",
        f"Detector prompt template: `{summary['prompt_template']}`. Build settings: `meta/build.json`.",
        "",
        "## License",
        "",
        f"{cfg.license}.",
        "",
    ]
    return "\n".join(lines)
