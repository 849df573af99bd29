"""``sdg generate``: its settings are the fields of :class:`~sdg_data.generate.runner.GenerateConfig`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from sdg_data.generate.runner import GenerateConfig
from sdg_data.io.cli_kit import config_command, echo, opt


def run_generate(cfg: GenerateConfig, prompts: str, out: Path) -> None:
    """Generate images from prompts with the SDG-30K generators; write PNGs and a manifest of records.

    Usage: sdg generate --prompts prompts.jsonl --out gen --config generate_sdg30k
           sdg generate --prompts prompts.jsonl --out gen --generator Z-Image-Turbo
           accelerate launch --num_processes 8 -m sdg_data.cli generate \\
               --prompts prompts.jsonl --out gen              (one GPU a rank)

    A rerun into the same --out skips finished images. Image ids hash generator, prompt, seed and settings.
    """
    from sdg_data.generate.runner import generate

    s = generate(prompts, out, cfg)
    if "images" not in s:  # a non-zero rank: rank 0 reports
        return
    dup = s.get("prompts_repeated", 0)
    echo(
        f"prompts: {s['prompt_rows']} read, {dup} repeats skipped, {s['prompts_rejected'] - dup} rejected; "
        f"images: {s['images']} of "
        f"{s['planned_images']} planned, {s['failed']} failed; by generator {json.dumps(s['by_generator'])}; "
        f"by split {json.dumps(s['by_split'])}"
        + (f"; {s['skipped_existing']} already made (resumed)" if s.get("skipped_existing") else "")
    )  # fmt: skip
    from sdg_data.io.report import require_kept

    require_kept(s, out / "generate.rejects.jsonl", "planned images")
    echo(f"output: {out}/manifest.jsonl, {out}/generate.rejects.jsonl, {out}/generate.summary.json")


def register(app: typer.Typer) -> None:
    prompts_help = (
        "JSONL / CSV / Parquet / TXT with a 'prompt' or 'caption' column, or a Hugging Face dataset (NAME or "
        "NAME:SPLIT). An optional 'split' column fixes a prompt's split."
    )
    config_command(
        app,
        "generate",
        GenerateConfig,
        run_generate,
        [
            opt("prompts", str, "--prompts", prompts_help),
            opt("out", Path, "--out", "Output folder: images/, manifest.jsonl, rejects, summary."),
        ],
        extra="gen",
    )
