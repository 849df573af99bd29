"""``sdg train sft|grpo|boxflow`` (trl's parser; optionally relaunched under ``accelerate launch``), ``sdg detect``
and ``sdg eval-lora``."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import typer

from sdg_data.io.cli_kit import arg, config_command, echo, fail, opt
from train.boxflow.lora_eval import LoraEvalConfig
from train.detector.detect import DetectConfig
from train.refine import RefineConfig


HELP = (
    "Train the detector (sdg train sft|grpo) or align a text-to-image model with its boxes (sdg train boxflow): "
    "--config RECIPE.yaml [--flag value ...]. Every option of the recipe (trl's SFTConfig/GRPOConfig, ModelConfig, "
    "the SDG script arguments, the reward's constants; BoxFlow's own two configs) can be given as a flag; "
    "'sdg train sft --help' lists them. Several GPUs: add --accelerate-config zero2_1x8 "
    "(boxflow: ddp_1x8.yaml) and the command relaunches itself under accelerate launch."
)
_FORWARD = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
SCRIPTS = {"sft": "train.detector.sft", "grpo": "train.detector.grpo", "boxflow": "train.boxflow.trainer"}


def recipe_args(script: str, args: list[str]) -> list[str]:
    """ARGS with the ``--config`` value made a file: a path stays, a bundled name (``smoke``, ``sft/smoke``,
    ``qwen3_vl_4b_sdg30k``) becomes its file, so trl's parser reads it from any working folder."""
    from sdg_data.io.bundled import resolve

    out = list(args)
    for i, a in enumerate(out):
        if a == "--config" and i + 1 < len(out):
            out[i + 1] = str(resolve(out[i + 1], (script,)))
        elif a.startswith("--config="):
            out[i] = "--config=" + str(resolve(a.split("=", 1)[1], (script,)))
    return out


def launch_file(value: str) -> str:
    """The accelerate config to launch with: a path or a bundled launch file's name (``zero2_1x8``). A DeepSpeed
    config it names by a relative path is found from the working folder, else beside the launch file (where the
    bundled ones keep theirs); then a copy with that path made absolute is what accelerate reads."""
    import tempfile

    import yaml

    from sdg_data.io.bundled import ROOT, resolve

    path = resolve(value, ("launch",), "--accelerate-config")
    cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    ds = (cfg.get("deepspeed_config") or {}).get("deepspeed_config_file") if isinstance(cfg, dict) else None
    if not isinstance(ds, str) or Path(ds).is_absolute() or Path(ds).is_file():
        return str(path)
    for base in (path.parent, ROOT):
        if (base / ds).is_file():
            cfg["deepspeed_config"]["deepspeed_config_file"] = str((base / ds).resolve())
            break
    else:
        raise ValueError(f"--accelerate-config {value}: its deepspeed_config_file {ds} is not found")
    fd, tmp = tempfile.mkstemp(prefix=f"sdg-{path.stem}-", suffix=".yaml")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return tmp


def launch_command(script: str, args: list[str]) -> list[str] | None:
    """``accelerate launch --config_file C -m MODULE ARGS`` (the script's module, from :data:`SCRIPTS`) when ARGS
    hold ``--accelerate-config C`` (or ``--accelerate-config=C``; a file or a bundled name such as ``zero2_1x8``);
    None to run here, in this process."""
    for i, a in enumerate(args):
        if a == "--accelerate-config" or a.startswith("--accelerate-config="):
            value = a.split("=", 1)[1] if "=" in a else (args[i + 1] if i + 1 < len(args) else "")
            if not value:
                raise ValueError("--accelerate-config needs a launch file or its name (e.g. zero2_1x8; sdg recipes)")
            config = launch_file(value)
            rest = args[:i] + args[i + (1 if "=" in a else 2) :]
            accelerate = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
            return [accelerate, "launch", "--config_file", config, "-m", SCRIPTS[script], *rest]
    return None


# what each script parses beside trl's own configs (the quick help lists these; --help-all lists everything)
_OWN = {
    "sft": ("train.detector.args:SDGScriptArguments",),
    "grpo": ("train.detector.args:SDGGRPOScriptArguments", "sdg_data.scoring.reward:RewardConfig"),
    "boxflow": ("train.boxflow.config:BoxFlowConfig", "train.boxflow.config:BoxFlowRewardConfig"),
}
_TRL = {"sft": "trl's SFTConfig and ModelConfig", "grpo": "trl's GRPOConfig and ModelConfig", "boxflow": None}


def quick_help(script: str) -> str:
    """``sdg train SCRIPT --help`` in the style of the other commands, in well under 2 s: the recipe and launch
    flags first, then this toolkit's own settings, then where trl's hundreds of options are listed."""
    import dataclasses
    import importlib
    import shutil
    import textwrap

    from sdg_data.io.bundled import bundled

    names = [b.name for b in bundled()]
    mine = ", ".join(b.name if names.count(b.name) == 1 else b.qualified for b in bundled() if b.kind == script)
    launch = ", ".join(b.name for b in bundled() if b.kind == "launch")
    doc = " ".join((importlib.import_module(SCRIPTS[script]).__doc__ or "").strip().split("\n\n")[0].split())
    doc = doc.replace("``", "")
    width = max(60, min(120, shutil.get_terminal_size((100, 20)).columns))
    usage = f"Usage: sdg train {script} --config RECIPE [--accelerate-config LAUNCH] [--OPTION VALUE ...]"
    lines = [*textwrap.wrap(usage, width, subsequent_indent=" " * 22), "",
             *(f"  {w}" for w in textwrap.wrap(doc, width - 4)), "", "Recipe and launch:"]  # fmt: skip

    def row(flag: str, text: str) -> None:
        wrapped = textwrap.wrap(text, width - 36) or [""]
        lines.append(f"  {flag:<32}{wrapped[0]}")
        lines.extend(f"  {'':<32}{w}" for w in wrapped[1:])

    row("--config NAME|PATH", f"a YAML recipe: a file, or a bundled one by name ({mine}; sdg recipes show NAME)")
    row("--accelerate-config NAME|PATH", f"relaunch under accelerate launch with this config ({launch})")
    for spec in _OWN[script]:
        module, name = spec.split(":")
        cls = getattr(importlib.import_module(module), name)
        lines += ["", f"{(cls.__doc__ or name).strip().splitlines()[0]} ({name}):"]
        for f in dataclasses.fields(cls):
            if not f.metadata.get("help"):
                continue  # inherited plumbing (trl's own script arguments) is in --help-all
            default = f.default if f.default is not dataclasses.MISSING else None
            row(f"--{f.name.replace('_', '-')}", f"{f.metadata['help']}  [default: {default}]")
    lines.append("")
    if _TRL[script]:
        tail = (f"Every option of {_TRL[script]} (learning rate, batch sizes, precision, ...) is a flag and a recipe "
                f"key too: sdg train {script} --help-all lists them all (it loads trl: a few seconds).")  # fmt: skip
        lines += textwrap.wrap(tail, width)
    return "\n".join(lines)


def _forward(script: str, ctx: typer.Context) -> None:
    if any(a in ("--help", "-h") for a in ctx.args):
        echo(quick_help(script))
        return
    ctx.args[:] = ["--help" if a == "--help-all" else a for a in ctx.args]
    try:
        args = recipe_args(script, list(ctx.args))
        cmd = launch_command(script, args)
    except ValueError as exc:
        raise fail(exc) from None
    if cmd is not None:
        echo(" ".join(cmd), err=True)
        os.execv(cmd[0], cmd)  # the launcher takes this process's place, as `trl sft --accelerate_config` does
    try:
        module = __import__(SCRIPTS[script], fromlist=["main"])
    except ImportError as exc:
        raise fail(ImportError(f"{exc}; install the train extra: pip install 'sdg[train]'")) from None
    try:
        module.main(args)
    except ValueError as exc:  # a recipe or batch that does not fit: one line, not a traceback
        raise fail(exc) from None


def run_detect(cfg: DetectConfig, source: Path, out: Path) -> None:
    """Run an SDG detector over images; write predictions that sdg eval and sdg annotate predict read.

    Usage: sdg detect ds --out detect --model P1n3/sdg-detector-grpo
           sdg eval --gt ds --pred detect/predictions.jsonl

    Served: python -m sglang.launch_server \\
                --model-path P1n3/sdg-detector-grpo \\
                --served-model-name sdg-detector --port 17142
            sdg detect ds --out detect --backend openai --model sdg-detector

    The key of a served detector, if any, is read from $SDG_DETECTOR_API_KEY. Rerunning into the same --out only
    does what is missing.
    """
    from train.detector.detect import detect

    s = detect(source, out, cfg)
    echo(
        f"read {s['read']}: predicted {s['predicted']} ({s['format_ok']} pass the format check, "
        f"{s['format_fail']} fail), rejected {s['rejected']}, resumed {s['resumed']}; {s['seconds']} s"
    )
    from sdg_data.io.report import require_kept

    require_kept(s, out / "detect.rejects.jsonl", "images")
    echo(f"output: {out}/predictions.jsonl, {out}/detect.rejects.jsonl, {out}/detect.summary.json")


def run_eval_lora(cfg: LoraEvalConfig, prompts: str, out: Path) -> None:
    """Compare a LoRA with its base model: same prompts and seeds, both sets scored by the SDG detector.

    Usage: sdg eval-lora --prompts drawbench.txt --lora runs/boxflow \\
               --detector-url http://HOST:17142/v1 --out eval-lora
           sdg eval-lora ... --scorer mypkg.scores:pickscore
               (any extra metric, paired the same way)

    Writes OUT/lora_eval.json and OUT/lora_eval.md: clean-image rate, defects per image and mean importance by
    type for each arm, and the per-prompt paired difference (LoRA - base) with its confidence interval.
    """
    from train.boxflow.lora_eval import evaluate, table

    result = evaluate(prompts, out, cfg)
    echo(table(result))
    echo(f"output: {out}/lora_eval.json, {out}/lora_eval.md, {out}/base, {out}/lora")


def run_refine(cfg: RefineConfig, source: Path, out: Path) -> None:
    """Edit images from their defects: the original, the caption plus the defects (and, in boxes+text mode, the
    boxes drawn on a second image) go to an image editor.

    Usage: sdg refine detect/predictions.jsonl --images ds --out refined
               (GPT-Image, key in $OPENAI_API_KEY)
           sdg refine records.jsonl --out refined --mode caption-only
               (the "Fixed" baseline)
           sdg refine records.jsonl --out bundles --backend dry-run
               (the requests, for any editor)
           sdg refine records.jsonl --out refined --backend diffusers \\
               --model black-forest-labs/FLUX.1-Kontext-dev

    Writes OUT/edits/*.png, OUT/refined.jsonl (a record per edit, linked to its source), rejects and a summary; a
    rerun into the same --out does only what is missing.
    """
    from train.refine import refine

    s = refine(source, out, cfg)
    limited = f", {s['left_out_by_limit']} left out by --limit" if s["left_out_by_limit"] else ""
    echo(
        f"read {s['read']}: edited {s['kept']}, rejected {s['rejected']}, clean skipped {s['clean_skipped']}"
        + (f", not annotated skipped {s['not_annotated_skipped']}" if s.get("not_annotated_skipped") else "")
        + f"{limited}, resumed {s['resumed']}; {s['seconds']} s"
    )
    from sdg_data.io.report import require_kept

    require_kept(s, out / "refine.rejects.jsonl")
    echo(f"output: {out}/refined.jsonl, {out}/refine.rejects.jsonl, {out}/refine.summary.json")


def register(root: typer.Typer) -> None:
    app = typer.Typer(help=HELP, no_args_is_help=True)

    @app.command("sft", context_settings=_FORWARD, add_help_option=False)
    def train_sft_cmd(ctx: typer.Context) -> None:
        """Detector SFT (train/detector/sft.py): full fine-tune, vision frozen, loss on the response only."""
        _forward("sft", ctx)

    @app.command("grpo", context_settings=_FORWARD, add_help_option=False)
    def train_grpo_cmd(ctx: typer.Context) -> None:
        """Detector GRPO (train/detector/grpo.py) with the SDG reward, from the SFT checkpoint."""
        _forward("grpo", ctx)

    @app.command("boxflow", context_settings=_FORWARD, add_help_option=False)
    def train_boxflow_cmd(ctx: typer.Context) -> None:
        """BoxFlow-GRPO (train/boxflow/trainer.py): a LoRA on FLUX.1 rewarded by a judge and the detector's boxes."""
        _forward("boxflow", ctx)

    root.add_typer(app, name="train")
    source_help = (
        "A folder of images (captions in NAME.txt beside them), a records JSONL, a parquet shard, or a folder "
        "written by sdg build (one split: --split, the held-out test images by default)."
    )
    config_command(
        root,
        "refine",
        RefineConfig,
        run_refine,
        [
            arg("source", Path, "Records with defects and image paths, or sdg detect predictions (with --images)."),
            opt(
                "out", Path, "--out", "Output folder: edits/, refined.jsonl, rejects, summary (requests/ for dry-run)."
            ),
        ],
        extra="train",
    )
    config_command(
        root,
        "eval-lora",
        LoraEvalConfig,
        run_eval_lora,
        [
            opt(
                "prompts",
                str,
                "--prompts",
                "Prompts: a text file (one a line, DrawBench style), JSONL, CSV or Parquet.",
            ),
            opt("out", Path, "--out", "Output folder: base/ and lora/ (images, predictions), lora_eval.json/.md."),
        ],
        extra="train",
    )
    config_command(
        root,
        "detect",
        DetectConfig,
        run_detect,
        [arg("source", Path, source_help), opt("out", Path, "--out", "Folder for predictions, rejects and summary.")],
        extra="train",
    )
