"""The interop commands: ``sdg import sdg30k | coco | richhf`` (SDG-30K's release, COCO detection JSON,
RichHF-18K's TFRecords into records) and ``sdg export coco`` (settings: ImportConfig, RichHFConfig)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from sdg_data.interop.richhf import RichHFConfig
from sdg_data.interop.sdg30k import ImportConfig
from sdg_data.io.cli_kit import arg, config_command, echo, guarded, opt, out_option
from sdg_data.io.report import require_kept


def run_import(cfg: ImportConfig, src: Path, out: Path, rejects: Path | None) -> None:
    """Bring the published SDG-30K annotations into core records, and check the raw box order on the data.

    Usage: sdg import sdg30k SDG-30K/annotations/test.jsonl --out test.jsonl
    """
    from sdg_data.interop.sdg30k import import_sdg30k

    report, agreement = import_sdg30k(src, out, rejects, cfg)
    x = report.extras
    echo(
        f"read {report.read}: wrote {report.kept} ({x['clean']} clean), rejected {report.rejected}; "
        f"placeholder boxes dropped {x['placeholders_dropped']}; defect source {json.dumps(x['by_source'])}"
    )
    if agreement["images"]:
        echo(
            f"raw box order check on {agreement['images']} images: mean IoU with translated boxes "
            f"{agreement['mean_iou_raw_as_xyxy']:.3f} if raw is xyxy, {agreement['mean_iou_raw_as_yxyx']:.3f} if yxyx"
        )
    from sdg_data.io.report import FAILED_RUN, require_kept

    where = rejects or out.parent / (FAILED_RUN if report.failed else "") / f"{out.stem}.import.rejects.jsonl"
    require_kept({**report.summary(), "stage": "import-sdg30k"}, where, "rows")


def sdg30k_params() -> list:
    """``sdg import sdg30k``'s own parameters (also under its old name, ``sdg import-sdg30k``)."""
    src = arg("src", Path, "Released annotations JSONL (annotations/train.jsonl or test.jsonl).")
    rejects = opt("rejects", Optional[Path], "--rejects", "Rows that could not be converted, with reasons.", None)
    return [src, out_option("Records JSONL to write."), rejects]


def export_coco_cmd(
    source: Annotated[Path, typer.Argument(help="Records JSONL (with image paths) or a dataset folder.")],
    out: Annotated[Path, typer.Option("--out", help="The COCO JSON to write.")],
    copy_images: Annotated[
        Optional[Path], typer.Option("--copy-images", help="Copy the images here (default: reference them).")
    ] = None,
    image_root: Annotated[
        Optional[list[str]], typer.Option("--image-root", help="Folder image paths may point into (repeatable).")
    ] = None,
    split: Annotated[
        str, typer.Option("--split", help="For a dataset folder: the split to export, all (default), test or train.")
    ] = "all",
) -> None:
    """Export the defects as COCO detection JSON (categories artifact and misalignment; description and importance
    as annotation attributes) for FiftyOne, CVAT or pycocotools. A dataset folder's images are copied out.

    Usage: sdg export coco dist/distilled.jsonl --out coco/sdg.json \\
               --copy-images coco/images
    """
    from sdg_data.interop.coco import export_coco

    s = export_coco(source, out, copy_images, image_root, split)
    echo(f"read {s['read']}: exported {s['kept']} images, {s['annotations']} boxes; rejected {s['rejected']}")
    echo(f"output: {out}")
    require_kept(s, out.with_name(f"{out.stem}.export.rejects.jsonl"))


def import_coco_cmd(
    coco: Annotated[Path, typer.Argument(help="A COCO detection JSON (from sdg export coco, CVAT, FiftyOne).")],
    out: Annotated[Path, typer.Option("--out", help="The records JSONL to write.")],
) -> None:
    """Import COCO detection JSON as SDG records (boxes back to the 0-1000 grid; each box needs a description
    attribute); an image whose boxes do not make valid defects is rejected whole, with the reason."""
    from sdg_data.interop.coco import import_coco

    s = import_coco(coco, out)
    echo(f"read {s['read']}: imported {s['kept']} images, {s['defects']} defects; rejected {s['rejected']}")
    echo(f"output: {out}, {out.with_suffix('')}.import.rejects.jsonl")
    require_kept(s, out.with_name(f"{out.stem}.import.rejects.jsonl"), "COCO images")


def run_import_richhf(cfg: RichHFConfig, tfrecord: Path, out: Path) -> None:
    """Import RichHF-18K: its artifact and misalignment heatmaps as boxes (threshold, connected regions, importance
    from each region's peak), joined to your Pick-a-Pic images by file name; scores and heatmap peaks kept in
    provenance for sdg eval-image-level.

    Usage: sdg import richhf richhf_18k/test.tfrecord --images pickapic/test \\
               --captions captions.jsonl --out richhf.jsonl
    """
    from sdg_data.interop.richhf import import_richhf

    s = import_richhf(tfrecord, out, cfg)
    echo(f"read {s['read']}: imported {s['kept']} images, {s['defects']} boxes; rejected {s['rejected']}")
    echo(f"output: {out}, {out.with_suffix('')}.import.rejects.jsonl")
    require_kept(s, out.with_name(f"{out.stem}.import.rejects.jsonl"), "TFRecord examples")


def register(app: typer.Typer) -> None:
    export = typer.Typer(help="Export to other formats: sdg export coco SOURCE --out coco.json", no_args_is_help=True)
    export.command("coco")(guarded(export_coco_cmd))
    app.add_typer(export, name="export")
    imports = typer.Typer(help="Import from other formats: sdg import sdg30k | coco | richhf FILE --out records.jsonl",
                          no_args_is_help=True)  # fmt: skip
    imports.command("coco")(guarded(import_coco_cmd))
    richhf = [
        arg("tfrecord", Path, "A RichHF-18K TFRecord file (train / dev / test)."),
        opt("out", Path, "--out", "Records JSONL to write (rejects, summary and heatmap PNGs beside it)."),
    ]
    config_command(imports, "richhf", RichHFConfig, run_import_richhf, richhf, extra="interop")
    config_command(imports, "sdg30k", ImportConfig, run_import, sdg30k_params())
    app.add_typer(imports, name="import")
    config_command(app, "import-sdg30k", ImportConfig, run_import, sdg30k_params(), hidden=True)  # the old name
