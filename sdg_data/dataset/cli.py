"""The dataset commands: ``sdg build``, ``sdg stats``, ``sdg viz`` and ``sdg validate`` (settings: BuildConfig,
VizConfig, ValidateConfig)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from sdg_data.dataset.build import BuildConfig
from sdg_data.dataset.viz import VizConfig
from sdg_data.io.arrow import SplitName
from sdg_data.io.cli_kit import arg, config_command, echo, guarded, opt, out_option, printable
from sdg_data.io.report import require_kept


def run_build(cfg: BuildConfig, records: Path, out: Path, push_to_hub: str | None, private: bool) -> None:
    """Write the SDG dataset: configs annotations, sft (jittered pairs), grpo and test, as parquet shards and a
    dataset card that datasets.load_dataset(OUT, NAME) reads.

    Usage: sdg build dist/distilled.jsonl --out ds
           sdg build dist/distilled.jsonl --out ds --push-to-hub you/my-sdg
    """
    import tempfile

    from sdg_data.dataset.build import build_dataset
    from sdg_data.io.jsonl import input_kind
    from sdg_data.io.sources import records_input

    if push_to_hub:  # a token and a reachable Hub, checked before the build, not after it
        from sdg_data.io.hub import check_push

        check_push(push_to_hub)
    if input_kind(records) == "dataset":  # rebuild from a dataset (other jitter, split): its records written out
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.source-") as tmp:
            s = build_dataset(records_input(records, tmp), out, cfg)
    else:
        s = build_dataset(records, out, cfg)
    from sdg_data.dataset.build import no_test_split

    no_test = no_test_split(s["rows"], cfg, s["built"])
    for w in s.get("warnings", []):
        if w != no_test:  # said last, where it is read
            typer.secho(printable(f"warning: {w}"), fg=typer.colors.YELLOW, err=True)
    echo(f"read {s['read']}: built {s['built']}, rejected {s['rejected']}; rows {json.dumps(s['rows'])}")
    echo(
        f"size {s['total_bytes'] / 1e6:.2f} MB = {s['size_ratio']:.3f} x (each image once "
        f"{s['unique_image_bytes'] / 1e6:.2f} MB + text {s['text_bytes'] / 1e6:.2f} MB), all four configs"
    )
    if push_to_hub:
        from sdg_data.io.hub import push_dataset

        try:
            push_dataset(out, push_to_hub, private)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; the dataset in {out} is complete: push it later with hf upload --repo-type "
                               f"dataset {push_to_hub} {out}") from None  # fmt: skip
        echo(f"pushed to https://huggingface.co/datasets/{push_to_hub}")
    echo(f"dataset: {out}")
    if no_test:
        typer.secho(printable(f"warning: {no_test}"), fg=typer.colors.YELLOW, err=True)


def stats_cmd(
    dataset: Annotated[Path, typer.Argument(help="A dataset folder written by sdg build, or a records JSONL.")],
    report: Annotated[
        Optional[Path], typer.Option("--report", help="HTML report path (default DATASET/report.html).")
    ] = None,
    split: Annotated[
        str, typer.Option("--split", help="For a dataset folder: the split to describe, all (default), test or train.")
    ] = "all",
) -> None:
    """Composition, boxes per image by generator and label, importance, box sizes, description lengths and
    the rejects of every stage: a table here and an HTML report with PNG plots."""
    from sdg_data.dataset.stats import dataset_stats, format_stats, write_report

    s = dataset_stats(dataset, split)
    default = dataset / "report.html" if dataset.is_dir() else dataset.with_name(f"{dataset.stem}.report.html")
    path = write_report(s, report or default)
    echo(format_stats(s))
    echo(f"report: {path}")


def run_viz(cfg: VizConfig, source: Path, out: Path) -> None:
    """Draw boxes, labels and importance on the images, one PNG each, for checks by eye. Files are named from
    the image ids made safe for paths; records whose image fails its checks go to OUT/viz.rejects.jsonl."""
    from sdg_data.dataset.viz import visualize

    s = visualize(source, out, cfg.limit, set(cfg.ids.split(",")) if cfg.ids else None, cfg.image_roots, cfg.split)
    rejects = out / "viz.rejects.jsonl"
    echo(
        f"drew {s['kept']} images into {out}"
        + (f"; {s['rejected']} rejected (see {rejects})" if s["rejected"] else "")
    )
    require_kept(s, rejects, "records")  # nothing drawn and something rejected: exit non-zero, with the reasons


@dataclass
class ValidateConfig:
    split: SplitName = field(
        default="all",
        metadata={"help": "for a dataset folder: the split to read"},
    )
    box_order: Literal["xyxy", "yxyx"] = field(default="xyxy", metadata={"help": "order of box_2d in the file"})
    per_annotation: bool | None = field(
        default=None,
        metadata={
            "flag": "--per-annotation/--per-image",
            "help": (
                "Several records per image are allowed (one per annotator, as in sdg annotate pull's "
                ".all.jsonl; the default for files named *.all.jsonl) or not (one record per image)."
            ),
        },
    )


VALIDATE_SHOWN = 20  # bad lines printed; the rest are counted


def run_validate(cfg: ValidateConfig, records: Path) -> None:
    """Check every line of a records file; print the counts, and every bad line (the first 20, then a count) with
    its line, record, field and reason. Exits 2 when any line is bad."""
    from sdg_data.io.jsonl import InputError, check_records

    many = records.name.endswith(".all.jsonl") if cfg.per_annotation is None else cfg.per_annotation
    recs, bad = [], []
    from sdg_data.io.jsonl import input_kind

    if records.is_dir() and input_kind(records) == "dataset":  # a built dataset: every split's records as stored
        from sdg_data.io.arrow import read_split

        recs = read_split(records, cfg.split)
    else:
        for _, got in check_records(records, order=cfg.box_order, unique=not many):
            (bad if isinstance(got, str) else recs).append(got)
    if not recs and not bad:
        raise InputError(f"{records}: no records (an empty file)")
    for line in bad[:VALIDATE_SHOWN]:
        echo(line, err=True)
    if len(bad) > VALIDATE_SHOWN:
        echo(f"... and {len(bad) - VALIDATE_SHOWN} more bad lines", err=True)
    n_def = sum(len(r.defects) for r in recs)
    with_defects = sum(bool(r.defects) for r in recs)
    clean = sum(r.annotated and not r.defects for r in recs)
    unannotated = sum(not r.annotated for r in recs)
    verdict = "valid" if not bad else f"{len(bad)} of {len(bad) + len(recs)} lines bad"
    kinds = (f"{with_defects} annotated with defects ({n_def} defects), {clean} annotated clean, "
             f"{unannotated} not annotated")  # fmt: skip
    if many:
        n_img = len({r.image_id for r in recs})
        echo(f"{records}: {len(recs)} annotations of {n_img} images: {kinds}: {verdict}")
    else:
        where = f" (split {cfg.split!r})" if records.is_dir() else ""
        echo(f"{records}{where}: {len(recs)} records: {kinds}: {verdict}")
    if unannotated:
        echo(
            f"  {unannotated} not annotated (defects null): push them to annotation (sdg annotate push); distill, "
            "build and every score refuse them until a person has looked"
        )
    if bad:
        raise typer.Exit(code=2)


def register(app: typer.Typer) -> None:
    hub = "Upload the folder to this Hub dataset repo (token from HF_TOKEN)."
    build = [arg("records", Path, "Distilled records JSONL (from sdg distill)."), out_option("The dataset folder.")]
    build += [opt("push_to_hub", Optional[str], "--push-to-hub", hub, None)]
    build += [opt("private", bool, "--private", "Create the Hub repo as private.", False)]
    config_command(app, "build", BuildConfig, run_build, build, extra="build")
    app.command("stats")(guarded(stats_cmd, "build"))
    viz = [arg("source", Path, "Records JSONL (with image paths) or a dataset folder."), out_option("PNG folder.")]
    config_command(app, "viz", VizConfig, run_viz, viz)
    records = arg("records", Path, "A records JSONL file to check against the data contract.")
    config_command(app, "validate", ValidateConfig, run_validate, [records])
