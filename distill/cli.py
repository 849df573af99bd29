"""``sdg distill``: its settings are the fields of :class:`~distill.config.DistillConfig`."""

from __future__ import annotations

from pathlib import Path

import typer

from distill.config import DistillConfig
from sdg_data.io.cli_kit import arg, config_command, echo, out_option


def run_distill(cfg: DistillConfig, records: Path, out: Path) -> None:
    """Turn each annotated image into the detector's target: a three-step think, English descriptions and
    importance scores, keeping the human boxes and labels exactly.

    Usage: sdg distill ann/records.jsonl --out dist     (offline template teacher)
           sdg distill ann/records.jsonl --out dist --config gemini
           sdg distill ann/records.jsonl --out dist --teacher openai \\
               --base-url http://localhost:8000/v1 \\
               --model Qwen/Qwen3-VL-235B-A22B-Instruct

    Finished records are cached under OUT/cache: rerunning after a crash sends only what is missing.
    """
    from distill.runner import distill_file
    from sdg_data.io.sources import records_input

    s = distill_file(records_input(records, out / "source"), out, cfg)  # a dataset folder: its images written out
    echo(
        f"read {s['read']}: distilled {s['distilled']}, rejected {s['rejected']} {s['rejected_by_stage']}; "
        f"{s['from_cache']} from cache, {s['this_run']['requests']} requests this run, "
        f"{s['transient_retries']} transient retries, {s['rule_retries']} rule retries; all runs into {out}: "
        f"{s['requests']} requests, tokens {s['prompt_tokens']} in / {s['completion_tokens']} out, "
        f"cost ${s['cost_usd']}"
    )
    from sdg_data.io.report import require_kept

    require_kept(s, out / "distill.rejects.jsonl")
    echo(f"output: {out}/distilled.jsonl, {out}/distill.rejects.jsonl, {out}/distill.summary.json")


def register(app: typer.Typer) -> None:
    records = arg("records", Path, "Annotated records JSONL (image_path relative to it, caption).")
    out = out_option("Folder for distilled.jsonl, distill.rejects.jsonl, distill.summary.json.")
    config_command(app, "distill", DistillConfig, run_distill, [records, out], extra="distill")
