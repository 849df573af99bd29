"""The dataset commands: ``sdg build``, ``sdg stats``, ``sdg viz`` (settings: BuildConfig, VizConfig) and
``sdg export coco`` / ``sdg import coco``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from sdg_data.build import BuildConfig
from sdg_data.cli_kit import arg, config_command, echo, guarded, opt, out_option, printable
from sdg_data.cli_score import run_import
from sdg_data.importers.richhf import RichHFConfig
from sdg_data.report import require_kept
from sdg_data.viz import VizConfig


def run_build(cfg: BuildConfig, records: Path, out: Path, push_to_hub: str | None, private: bool) -> None:
    """Write the SDG dataset: configs annotations, sft (jittered pairs), grpo and test, as parquet shards and a
    dataset card that datasets.load_dataset(OUT, NAME) reads.

    Usage: sdg build work/distill/distilled.jsonl --out work/dataset --image-root work
    """
    import tempfile

    from sdg_data.build import build_dataset
    from sdg_data.jsonl import input_kind
    from sdg_data.viz import records_input

    if input_kind(records) == "dataset":  # rebuild from a dataset (other jitter, split): its records written out
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.source-") as tmp:
            s = build_dataset(records_input(records, tmp), out, cfg)
    else:
        s = build_dataset(records, out, cfg)
    for w in s.get("warnings", []):
        typer.secho(printable(f"warning: {w}"), fg=typer.colors.YELLOW, err=True)
    echo(f"read {s['read']}: built {s['built']}, rejected {s['rejected']}; rows {json.dumps(s['rows'])}")
    echo(
        f"size {s['total_bytes'] / 1e6:.2f} MB = {s['size_ratio']:.3f} x (each image once "
        f"{s['unique_image_bytes'] / 1e6:.2f} MB + text {s['text_bytes'] / 1e6:.2f} MB), all four configs"
    )
    if push_to_hub:
        from sdg_data.hub import push_dataset

        push_dataset(out, push_to_hub, private)
        echo(f"pushed to https://huggingface.co/datasets/{push_to_hub}")
    echo(f"dataset: {out}")


def stats_cmd(
    dataset: Annotated[Path, typer.Argument(help="A dataset folder written by sdg build, or a records JSONL.")],
    report: Annotated[
        Optional[Path], typer.Option("--report", help="HTML report path (default DATASET/report.html).")
    ] = None,
) -> None:
    """Composition, boxes per image by generator and label, importance, box sizes, description lengths and
    the rejects of every stage: a table here and an HTML report with PNG plots."""
    from sdg_data.stats import dataset_stats, format_stats, write_report

    s = dataset_stats(dataset)
    default = dataset / "report.html" if dataset.is_dir() else dataset.with_name(f"{dataset.stem}.report.html")
    path = write_report(s, report or default)
    echo(format_stats(s))
    echo(f"report: {path}")


def run_viz(cfg: VizConfig, source: Path, out: Path) -> None:
    """Draw boxes, labels and importance on the images, one PNG each, for checks by eye. Files are named from
    the image ids made safe for paths; records whose image fails its checks go to OUT/viz.rejects.jsonl."""
    from sdg_data.viz import visualize

    n, rejects = visualize(source, out, cfg.limit, set(cfg.ids.split(",")) if cfg.ids else None, cfg.image_roots)
    extra = f"; {len(rejects)} rejected (see {out / 'viz.rejects.jsonl'})" if rejects else ""
    echo(f"drew {n} images into {out}{extra}")


def export_coco_cmd(
    source: Annotated[Path, typer.Argument(help="Records JSONL (with image paths) or a dataset folder.")],
    out: Annotated[Path, typer.Option("--out", help="The COCO JSON to write.")],
    copy_images: Annotated[
        Optional[Path], typer.Option("--copy-images", help="Copy the images here (default: reference them).")
    ] = None,
    image_root: Annotated[
        Optional[list[str]], typer.Option("--image-root", help="Folder image paths may point into (repeatable).")
    ] = None,
) -> None:
    """Export the defects as COCO detection JSON (categories artifact and misalignment; description and importance
    as annotation attributes) for FiftyOne, CVAT or pycocotools. A dataset folder's images are copied out.

    Usage: sdg export coco work/distill/distilled.jsonl --out work/coco/sdg.json --copy-images work/coco/images
    """
    from sdg_data.coco import export_coco

    s = export_coco(source, out, copy_images, image_root)
    echo(f"read {s['read']}: exported {s['kept']} images, {s['annotations']} boxes; rejected {s['rejected']}")
    echo(f"output: {out}")
    require_kept(s, out.with_name(f"{out.stem}.export.rejects.jsonl"))


def import_coco_cmd(
    coco: Annotated[Path, typer.Argument(help="A COCO detection JSON (from sdg export coco, CVAT, FiftyOne).")],
    out: Annotated[Path, typer.Option("--out", help="The records JSONL to write.")],
) -> None:
    """Import COCO detection JSON as SDG records (boxes back to the 0-1000 grid; each box needs a description
    attribute); an image whose boxes do not make valid defects is rejected whole, with the reason."""
    from sdg_data.coco import import_coco

    s = import_coco(coco, out)
    echo(f"read {s['read']}: imported {s['kept']} images, {s['defects']} defects; rejected {s['rejected']}")
    echo(f"output: {out}, {out.with_suffix('')}.import.rejects.jsonl")
    require_kept(s, out.with_name(f"{out.stem}.import.rejects.jsonl"), "COCO images")


def run_import_richhf(cfg: RichHFConfig, tfrecord: Path, out: Path) -> None:
    """Import RichHF-18K: its artifact and misalignment heatmaps as boxes (threshold, connected regions, importance
    from each region's peak), joined to your Pick-a-Pic images by file name; scores and heatmap peaks kept in
    provenance for sdg eval-image-level.

    Usage: sdg import richhf richhf_18k/test.tfrecord --images pickapic/test --captions captions.jsonl --out r.jsonl
    """
    from sdg_data.importers.richhf import import_richhf

    s = import_richhf(tfrecord, out, cfg)
    echo(f"read {s['read']}: imported {s['kept']} images, {s['defects']} boxes; rejected {s['rejected']}")
    echo(f"output: {out}, {out.with_suffix('')}.import.rejects.jsonl")
    require_kept(s, out.with_name(f"{out.stem}.import.rejects.jsonl"), "TFRecord examples")


def register(app: typer.Typer) -> None:
    hub = "Upload the folder to this Hub dataset repo (token from HF_TOKEN)."
    build = [arg("records", Path, "Distilled records JSONL (from sdg distill)."), out_option("The dataset folder.")]
    build += [opt("push_to_hub", Optional[str], "--push-to-hub", hub, None)]
    build += [opt("private", bool, "--private", "Create the Hub repo as private.", False)]
    config_command(app, "build", BuildConfig, run_build, build, extra="build")
    app.command("stats")(guarded(stats_cmd, "build"))
    viz = [arg("source", Path, "Records JSONL (with image paths) or a dataset folder."), out_option("PNG folder.")]
    config_command(app, "viz", VizConfig, run_viz, viz)
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
    from sdg_data.cli_score import sdg30k_params
    from sdg_data.importers.sdg30k import ImportConfig

    config_command(imports, "sdg30k", ImportConfig, run_import, sdg30k_params())
    app.add_typer(imports, name="import")
