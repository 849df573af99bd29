"""The scoring commands: ``sdg eval``, ``sdg reward``, ``sdg compare`` and ``sdg eval-image-level``.

Their settings are the fields of :class:`~sdg_data.scoring.evaluation.EvalConfig`,
:class:`~sdg_data.scoring.reward.RewardConfig` and :class:`~sdg_data.scoring.image_level.ImageLevelConfig`; see
:mod:`sdg_data.io.cli_kit` for how fields become flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sdg_data.io.cli_kit import config_command, echo, guarded, opt, param
from sdg_data.scoring.evaluation import EvalConfig
from sdg_data.scoring.image_level import ImageLevelConfig
from sdg_data.scoring.reward import RewardConfig


GT = opt(
    "gt",
    Path,
    "--gt",
    "Ground-truth records (JSONL, box_2d xyxy on the 0-1000 grid), a parquet shard or an sdg build folder.",
)
SPLIT = opt(
    "split",
    Optional[str],
    "--split",
    "The split that is the ground truth: test (the held-out images), train or all. Unset: a dataset folder's test "
    "split, a records file whole (given, only its records of that split).",
    None,
)
PRED = opt("pred", Path, "--pred", "Predictions (JSONL): 'defects' lists, or raw model text under 'response'.")


EMBEDDER = Annotated[
    Optional[str],
    typer.Option(
        "--embedder",
        help="Description embedder: a model id or local folder (default Qwen/Qwen3-Embedding-0.6B), "
        "'lexical' (offline, not comparable with the paper) or 'none'.",
    ),
]


def run_eval(cfg: EvalConfig, gt: Path, pred: Path, out: Path | None) -> None:
    """Score predictions with SDG-Eval and print the paper's Table 2 layout, overall and per generator.

    Usage: sdg eval --gt test.jsonl --pred pred.jsonl --out report.json

    Human agreement (the paper's "Human" row): pass one annotator's records as --gt and another's as --pred.
    """
    from sdg_data.scoring.evaluation import evaluate_files, format_table

    report = evaluate_files(gt, pred, out, cfg)
    echo(format_table(report, title=pred.stem))
    if "ap" in report:
        from sdg_data.scoring.ap import format_ap

        echo(format_ap(report["ap"]))
    if "bootstrap" in report:
        b = report["bootstrap"]
        echo(f"{b['level']:.0%} intervals over {b['n']} bootstrap draws of the images:")
        for label in (k for k in b if isinstance(b[k], dict)):
            cells = ", ".join(f"{m} [{v[0]:.3f}, {v[1]:.3f}]" for m, v in b[label].items() if v is not None)
            echo(f"  {label}: {cells}")
    p = report["predictions"]
    echo(
        f"predictions: {p['lines']} lines, {p['format_failures']} format failures "
        f"({p['unparseable']} with no usable defect), {p['missing_predictions']} images without a prediction, "
        f"{p['unknown_image_ids']} unknown image ids, {p['coercions']} values coerced"
        + (f", {p['not_annotated_predictions']} for images not annotated (not scored)"
           if p.get("not_annotated_predictions") else "")
    )  # fmt: skip
    if p["coercions"]:  # never silent: what the scorer read differently from what the file says
        first = p["coercion_examples"][0]
        echo(f"  coerced (first, line {first['line']}, {first['image_id']!r}): {'; '.join(first['issues'])}")
    if out:
        echo(f"report: {out}")


def run_reward(cfg: RewardConfig, gt: Path, pred: Path, out: Path, embedder: str | None, split: str | None) -> None:
    """Compute the detector's GRPO reward for each prediction, with its components.

    Usage: sdg reward --gt test.jsonl --pred completions.jsonl --out rewards.jsonl

    Each output line: image_id, reward, format_ok, case, r_box, r_desc, r_imp, counts and the format failure reason.
    """
    from sdg_data.io.truth import describe
    from sdg_data.scoring.embedding import DEFAULT_EMBEDDER
    from sdg_data.scoring.reward import reward_files

    _, summary = reward_files(gt, pred, out, cfg, embedder or DEFAULT_EMBEDDER, split)
    echo(describe(summary["ground_truth"]))
    echo(
        f"{int(summary['completions'])} completions: mean reward {summary['reward']:.4f}, "
        f"R_box {summary['r_box']:.4f}, R_desc {summary['r_desc']:.4f}, R_imp {summary['r_imp']:.4f}, "
        f"format failures {int(summary['parse_failures'])}, {summary['coercions']} values coerced, "
        f"{summary['missing_predictions']} ground-truth images without a prediction"
        + (f", {summary['not_annotated_predictions']} predictions for images not annotated (not scored)"
           if summary["not_annotated_predictions"] else "")
    )  # fmt: skip
    echo(f"rewards: {out} (summary: {out.with_name(out.stem + '.summary.json')})")


def run_eval_image_level(cfg: ImageLevelConfig, gt: Path, pred: Path, out: Path | None) -> None:
    """Image-level precision / recall / F1 per type (the paper's Table 3 on RichHF-18K): ground truth present when
    the record's heatmap peak exceeds --threshold (records from sdg import richhf; other records: a box of the type),
    predicted present when the detector boxes the type. Prints the Table 3 layout with the paper's rows.

    Usage: sdg eval-image-level --gt richhf.jsonl --pred detect/predictions.jsonl \\
               --out table3.json
    """
    from sdg_data.scoring.image_level import format_table3, write_image_level

    result = write_image_level(gt, pred, out, cfg.threshold, cfg.box_order)
    echo(format_table3(result))
    if out:
        echo(f"report: {out}")


def compare_cmd(
    a: Annotated[Path, typer.Argument(help="The first run's report (sdg eval --out A.json), the reference.")],
    b: Annotated[Path, typer.Argument(help="The second run's report, scored on the same ground truth.")],
    draws: Annotated[int, typer.Option("--draws", min=1, max=100_000, help="Paired bootstrap draws.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seeds the draws.")] = 0,
    out: Annotated[Optional[Path], typer.Option("--out", help="Also write the comparison as JSON.")] = None,
    allow_different_gt: Annotated[
        bool,
        typer.Option(
            "--allow-different-gt",
            help="Compare reports scored on different ground truth (another split, file or build); the output "
            "then says so. Refused by default.",
        ),
    ] = False,
    allow_different_settings: Annotated[
        bool,
        typer.Option(
            "--allow-different-settings",
            help="Compare reports scored with different settings (matching, box scope, box order, strict format, "
            "embedder); the output then says so. Refused by default.",
        ),
    ] = False,
) -> None:
    """Compare two sdg eval runs: B minus A for every SDG-Eval metric, with paired bootstrap intervals over the
    images both scored, so you can say whether GRPO beat SFT on your data.

    Usage: sdg compare runs/sft-eval.json runs/grpo-eval.json
    """
    from sdg_data.scoring.evaluation import compare, format_compare

    c = compare(a, b, draws, seed, allow_different_gt=allow_different_gt,
                allow_different_settings=allow_different_settings)  # fmt: skip
    echo(format_compare(c))
    if out:
        from sdg_data.io.files import write_json

        write_json(out, c)
        echo(f"report: {out}")


def register(app: typer.Typer) -> None:
    out_opt = Annotated[Optional[Path], typer.Option("--out", help="Where to write the JSON report.")]
    config_command(app, "eval", EvalConfig, run_eval, [GT, PRED, param("out", out_opt, None)], extra="embed")
    reward_out = Annotated[Path, typer.Option("--out", help="Where to write one JSON line per prediction.")]
    embedder = param("embedder", EMBEDDER, None)
    config_command(
        app, "reward", RewardConfig, run_reward, [GT, PRED, param("out", reward_out), embedder, SPLIT],
        extra="embed",
    )  # fmt: skip
    app.command("compare")(guarded(compare_cmd))
    report = param("out", out_opt, None)
    gt = opt("gt", Path, "--gt", "Records from sdg import richhf (heatmap peaks in provenance), or any records.")
    config_command(app, "eval-image-level", ImageLevelConfig, run_eval_image_level, [gt, PRED, report])
