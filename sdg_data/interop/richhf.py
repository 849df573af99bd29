"""RichHF-18K (Liang et al., CVPR 2024) as SDG records, for the paper's Table 3 and for heatmap baselines.

RichHF-18K ships TFRecord files: per Pick-a-Pic image its ``filename``, four scores (aesthetics, artifact,
misalignment, overall), an ``artifact_map`` and a ``misalignment_map`` (encoded single-channel images) and the
prompt's token labels. They are read with the small ``tfrecord`` package (no TensorFlow) and joined to the
Pick-a-Pic images the user has, by file name; the caption comes from ``--captions`` (JSONL / CSV with ``filename``
and ``caption``) or a ``NAME.txt`` beside the image.

Each heatmap becomes boxes through :func:`sdg_data.boxes.boxes_from_heatmap` (threshold, 8-connected regions, one
box each, importance from the region's peak), and its peak is kept in provenance, so the image-level metric can use
the paper's own rule (ground truth present when the map's maximum exceeds 0.33). The maps themselves are written as
PNGs beside the records for the heatmap baselines. An image that cannot be joined or read goes to the rejects.
"""

from __future__ import annotations

import csv
import io
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdg_data.boxes import boxes_from_heatmap
from sdg_data.config import Fraction, Positive
from sdg_data.io.files import write_bytes
from sdg_data.io.paths import vouch
from sdg_data.io.report import StageReport
from sdg_data.records import Defect, ImageRecord
from sdg_data.scoring.image_level import PAPER_THRESHOLD


MAPS = {"artifact": "artifact_map", "misalignment": "misalignment_map"}
SCORES = ("aesthetics_score", "artifact_score", "misalignment_score", "overall_score")


@dataclass
class RichHFConfig:
    images: str | None = field(
        default=None, metadata={"help": "folder of the Pick-a-Pic images, named as RichHF's `filename`"}
    )
    captions: str | None = field(
        default=None, metadata={"help": "JSONL or CSV with `filename` and `caption`; else NAME.txt beside each image"}
    )
    threshold: Fraction = field(
        default=PAPER_THRESHOLD, metadata={"help": "heatmap value (0-1) above which a pixel is marked"}
    )
    min_pixels: Positive = field(
        default=16, metadata={"help": "marked regions smaller than this many heatmap pixels are not boxes"}
    )
    split: str | None = field(
        default=None, metadata={"help": "the split recorded in every record (RichHF's train / dev / test file)"}
    )
    write_heatmaps: bool = field(
        default=True, metadata={"help": "write each map as OUT.heatmaps/<id>.<type>.png (for heatmap baselines)"}
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")


MAX_HEATMAP_PIXELS = 4096 * 4096  # RichHF's maps are 512 x 512; a header declaring more is a bad entry, not a map


class FrameError(ValueError):
    """The file's framing is broken at record ``n``: nothing after it can be located."""

    def __init__(self, n: int, message: str) -> None:
        super().__init__(f"record #{n}: {message}")
        self.n = n


def _masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C of ``data``."""
    import crc32c

    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _frames(path: str | Path) -> Iterator[tuple[int, bytes | ValueError]]:
    """``(n, payload)`` per TFRecord frame, or ``(n, error)`` for a frame whose data fails its CRC (the next frame
    is still found). A length that fails its CRC or claims more bytes than the file holds ends the file with a
    FrameError: memory is never sized by an unchecked length (a 20-byte file once claimed 600 MB)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        n = 0
        while True:
            at = f.tell()
            head = f.read(12)
            if not head:
                return
            n += 1
            if len(head) < 12:
                raise FrameError(n, f"the file ends inside a record header (byte {at})")
            (length,), (want,) = struct.unpack("<Q", head[:8]), struct.unpack("<I", head[8:])
            if _masked_crc(head[:8]) != want:
                raise FrameError(n, f"the length at byte {at} fails its CRC (not a TFRecord, or corrupt)")
            if length + 4 > size - at - 12:
                raise FrameError(n, f"claims {length} bytes at byte {at}, the file holds {size - at - 16}")
            data, (crc,) = f.read(length), struct.unpack("<I", f.read(4))
            yield n, data if _masked_crc(data) == crc else ValueError(f"record #{n}: its data fails its CRC")


def read_tfrecord(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | ValueError]]:
    """``(n, example)`` per record of a RichHF-18K TFRecord file, with byte features as bytes and float features
    as lists; ``(n, error)`` for a record that fails its checks. Length and CRCs are verified before anything is
    allocated or parsed; a broken frame ends the file with one more ``(n, FrameError)``."""
    try:
        from google.protobuf.message import DecodeError
        from tfrecord import example_pb2
    except ImportError as exc:
        raise ImportError(f"{exc}; install the interop extra: pip install 'sdg[interop]'") from None
    try:
        for n, data in _frames(path):
            if isinstance(data, ValueError):
                yield n, data
                continue
            ex = example_pb2.Example()
            try:
                ex.ParseFromString(data)
            except (DecodeError, RecursionError) as exc:
                yield n, ValueError(f"record #{n}: not a tf.train.Example ({type(exc).__name__})")
                continue
            out: dict[str, Any] = {}
            for key, feat in ex.features.feature.items():
                kind = feat.WhichOneof("kind")
                if kind == "bytes_list" and feat.bytes_list.value:
                    out[key] = bytes(feat.bytes_list.value[0])
                elif kind == "float_list":
                    out[key] = list(feat.float_list.value)
                elif kind == "int64_list":
                    out[key] = list(feat.int64_list.value)
            yield n, out
    except FrameError as exc:
        yield exc.n, exc


def _decode_map(data: Any, field: str) -> np.ndarray:
    from PIL import Image

    if not isinstance(data, bytes):
        raise ValueError(f"field {field!r}: missing or not an encoded image")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_HEATMAP_PIXELS:  # checked on the header, before any decoding
                raise ValueError(
                    f"field {field!r}: a {im.width} x {im.height} map is past the "
                    f"{MAX_HEATMAP_PIXELS:,}-pixel cap for heatmaps"
                )
            return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ValueError(f"field {field!r}: not a decodable image ({type(exc).__name__})") from None


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else ""


def _scores(ex: dict[str, Any]) -> dict[str, float]:
    """The four scores that are present; a score that is not one finite number is a bad entry, not a value."""
    out = {}
    for s in SCORES:
        v = ex.get(s)
        if v is None:
            continue
        if len(v) != 1 or not math.isfinite(v[0]):
            raise ValueError(f"field {s!r}: {v[:3]} is not one finite number")
        out[s] = round(float(v[0]), 4)
    return out


def _captions(cfg: RichHFConfig) -> dict[str, str]:
    if not cfg.captions:
        return {}
    p = Path(cfg.captions)
    if p.suffix == ".csv":
        with p.open(encoding="utf-8", newline="") as f:
            return {r["filename"]: r["caption"] for r in csv.DictReader(f) if r.get("filename")}
    from sdg_data.io.jsonl import iter_jsonl

    return {o["filename"]: o["caption"] for _, o in iter_jsonl(p) if isinstance(o, dict) and "filename" in o}


def _heatmap_defects(iid: str, maps: dict, cfg: RichHFConfig, maps_dir: Path, base: Path):
    """One example's heatmaps as defects (a box per region above the threshold, importance from its peak), each
    map's peak, and (``write_heatmaps``) the maps as PNGs with their paths relative to ``base``."""
    from PIL import Image

    defects, peaks, paths = [], {}, {}
    for label, heat in maps.items():
        peaks[label] = round(float(heat.max()), 4)
        for box, peak in boxes_from_heatmap(heat, cfg.threshold, cfg.min_pixels):
            desc = f"region marked by RichHF-18K raters on the {label} heatmap (peak {peak:.2f})"
            defects.append(Defect(box, label, desc, max(1, min(100, round(peak * 100)))))
        if cfg.write_heatmaps:
            maps_dir.mkdir(parents=True, exist_ok=True)
            dest = maps_dir / f"{iid}.{label}.png"
            buf = io.BytesIO()
            Image.fromarray((heat * 255).round().astype("uint8")).save(buf, format="PNG")
            write_bytes(dest, buf.getvalue())  # a temp file renamed over the name: a planted link is replaced
            paths[label] = str(dest.relative_to(base))
    return defects, peaks, paths


def import_richhf(tfrecord: str | Path, out: str | Path, cfg: RichHFConfig) -> dict[str, Any]:
    """Write ``out`` (records), its rejects and summary (and the heatmap PNGs); returns the summary."""
    from sdg_data.io.files import write_jsonl
    from sdg_data.io.images import ImageError, load_image
    from sdg_data.io.paths import Resolver

    out = Path(out)
    from sdg_data.io.files import output_root

    output_root(out.parent)  # the heatmap PNGs land below it, never through a link
    if not cfg.images:
        raise ValueError("--images is required: the folder of the Pick-a-Pic images RichHF-18K's file names name")
    root = Path(cfg.images)
    resolver = Resolver(root)
    captions = _captions(cfg)
    maps_dir = out.with_name(out.stem + ".heatmaps")
    report = StageReport("import")
    rows = []
    for n, ex in read_tfrecord(tfrecord):
        report.read += 1
        if isinstance(ex, ValueError):  # a record that fails its CRC or does not parse: a reject, the run goes on
            report.reject(f"{tfrecord}: {ex}", f"richhf-{n}", f"{tfrecord}#{n}", None)
            continue
        name = _text(ex.get("filename"))
        iid = Path(name).stem or f"richhf-{n}"
        try:
            if not name:
                raise ValueError("field 'filename': missing or empty")
            img = load_image(name, resolver)
            caption = captions.get(name)
            side = (root / name).with_suffix(".txt")
            why = ""
            if caption is None:
                from sdg_data.io.sidecar import read_caption

                caption, why = read_caption(side)
            if not caption:
                raise ValueError(f"no caption for {name} ({why or 'empty'}; give --captions or a {side.name} beside "
                                 "the image)")  # fmt: skip
            maps = {t: _decode_map(ex.get(key), key) for t, key in MAPS.items()}
            scores = _scores(ex)
        except (ImageError, ValueError, OSError) as exc:
            report.reject(f"record {iid!r}: {exc}", iid, f"{tfrecord}#{n}", None)
            continue
        defects, peaks, paths = _heatmap_defects(iid, maps, cfg, maps_dir, out.parent)
        prov = {"source": "richhf-18k", "filename": name, "scores": scores, "heatmap_peaks": peaks,
                "threshold": cfg.threshold, "prompt_misalignment_label": _text(ex.get("prompt_misalignment_label")),
                "heatmaps": paths}  # fmt: skip
        rel = os.path.relpath(img.path, out.parent)
        rec = ImageRecord(image_id=iid, defects=defects, image_path=rel, width=img.width, height=img.height,
                          caption=caption, split=cfg.split, provenance=prov)  # fmt: skip
        rows.append(rec.to_json())
        report.kept += 1
    if not report.failed:
        write_jsonl(out, rows)
    report.extras = {"defects": sum(len(r["defects"]) for r in rows), "threshold": cfg.threshold}
    if not report.failed:  # the Pick-a-Pic folder travels with the records to the next stage
        report.extras.update(vouch(out, [root]))
    return report.write(out.parent, prefix=f"{out.stem}.")
