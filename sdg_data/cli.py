"""The ``sdg`` command. Each sub-command parses its options and calls one library function; no logic lives here.

Heavy libraries are imported inside the commands so that ``sdg --help`` starts fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer


app = typer.Typer(
    name="sdg",
    help=(
        "Structured Defect Grounding toolkit: build SDG datasets for text-to-image models and score detectors.\n\n"
        "A defect is a box on the 0-1000 grid (xyxy), a label (artifact | misalignment), a description and an "
        "importance 1-100. Records travel between stages as JSONL lines "
        '{"image_id": ..., "defects": [{"box_2d": \\[x0, y0, x1, y1], "label": ..., "description": ..., '
        '"importance": ...}]}.'
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="YAML recipe; flags given here override it.")]
GtOpt = Annotated[Path, typer.Option("--gt", help="Ground-truth records (JSONL, box_2d xyxy on the 0-1000 grid).")]
PredOpt = Annotated[
    Path, typer.Option("--pred", help="Predictions (JSONL): 'defects' lists, or raw model text under 'response'.")
]
EmbedderOpt = Annotated[
    Optional[str],
    typer.Option(
        "--embedder",
        help="Description embedder: a model id or local folder (default Qwen/Qwen3-Embedding-0.6B), "
        "'lexical' (offline, not comparable with the paper) or 'none'.",
    ),
]
BoxOrderOpt = Annotated[
    Optional[str], typer.Option("--box-order", help="Order of box_2d in the predictions: xyxy (paper) or yxyx.")
]


def _one_line(exc: BaseException) -> str:
    """An exception as one redacted line (keys masked, newlines folded, long server bodies cut)."""
    from sdg_data.secrets import redact

    text = " ".join(str(exc).split()) or type(exc).__name__
    text = redact(text)
    return text if len(text) <= 2000 else text[:2000] + " ..."


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {_one_line(exc)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


ImageRootOpt = Annotated[
    Optional[list[Path]],
    typer.Option(
        "--image-root",
        help="Folder that image_path may point into (repeatable). Default: the records file's folder. Paths that "
        "leave the allowed folders (.., absolute paths, symlinks) are rejected.",
    ),
]


@app.command("eval")
def eval_cmd(
    gt: GtOpt,
    pred: PredOpt,
    out: Annotated[Optional[Path], typer.Option("--out", help="Where to write the JSON report.")] = None,
    match: Annotated[
        Optional[str], typer.Option("--match", help="hungarian (the paper) or greedy (the released evaluate.py).")
    ] = None,
    embedder: EmbedderOpt = None,
    box_order: BoxOrderOpt = None,
    box_scope: Annotated[
        Optional[str],
        typer.Option("--box-scope", help="gt_positive (paper's GT>0 columns) or all images for box metrics."),
    ] = None,
    strict_format: Annotated[
        Optional[bool], typer.Option("--strict-format/--lenient-format", help="Count format failures as no defect.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Score predictions with SDG-Eval and print the paper's Table 2 layout, overall and per generator.

    Usage: sdg eval --gt test.jsonl --pred pred.jsonl --out report.json

    Human agreement (the paper's "Human" row): pass one annotator's records as --gt and another's as --pred.
    """
    from sdg_data.config import ConfigError, load_config
    from sdg_data.evaluation import EvalConfig, evaluate_files, format_table
    from sdg_data.jsonl import InputError

    try:
        cfg = load_config(
            EvalConfig,
            config,
            dict(
                match=match, embedder=embedder, box_order=box_order, box_scope=box_scope, strict_format=strict_format
            ),
        )
        report = evaluate_files(gt, pred, out, cfg)
    except (ConfigError, InputError, ValueError, OSError) as exc:
        _fail(exc)
    typer.echo(format_table(report, title=pred.stem))
    p = report["predictions"]
    typer.echo(
        f"predictions: {p['lines']} lines, {p['format_failures']} format failures "
        f"({p['unparseable']} with no usable defect), {p['missing_predictions']} images without a prediction, "
        f"{p['unknown_image_ids']} unknown image ids"
    )
    if out:
        typer.echo(f"report: {out}")


@app.command("reward")
def reward_cmd(
    gt: GtOpt,
    pred: PredOpt,
    out: Annotated[Path, typer.Option("--out", help="Where to write one JSON line per prediction.")],
    embedder: EmbedderOpt = None,
    box_order: BoxOrderOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Compute the detector's GRPO reward for each prediction, with its components.

    Usage: sdg reward --gt test.jsonl --pred completions.jsonl --out rewards.jsonl

    Each output line: image_id, reward, format_ok, case, r_box, r_desc, r_imp, counts and the format failure reason.
    Weights and constants come from the RewardConfig fields (see --config).
    """
    from sdg_data.config import ConfigError, load_config
    from sdg_data.embedding import DEFAULT_EMBEDDER
    from sdg_data.jsonl import InputError
    from sdg_data.reward import RewardConfig, reward_files

    try:
        cfg = load_config(RewardConfig, config, dict(box_order=box_order))
        _, summary = reward_files(gt, pred, out, cfg, embedder or DEFAULT_EMBEDDER)
    except (ConfigError, InputError, ValueError, OSError) as exc:
        _fail(exc)
    typer.echo(
        f"{int(summary['completions'])} completions: mean reward {summary['reward']:.4f}, "
        f"R_box {summary['r_box']:.4f}, R_desc {summary['r_desc']:.4f}, R_imp {summary['r_imp']:.4f}, "
        f"format failures {int(summary['parse_failures'])}"
    )
    typer.echo(f"rewards: {out}")


@app.command("validate")
def validate_cmd(
    records: Annotated[Path, typer.Argument(help="A records JSONL file to check against the data contract.")],
    box_order: BoxOrderOpt = None,
    per_annotation: Annotated[
        Optional[bool],
        typer.Option(
            "--per-annotation/--per-image",
            help="Several records per image are allowed (one per annotator, as in sdg annotate pull's "
            ".all.jsonl; the default for files named *.all.jsonl) or not (one record per image).",
        ),
    ] = None,
) -> None:
    """Check every line of a records file; print counts, or the first error with its line, record and field."""
    from sdg_data.jsonl import InputError, read_records

    many = records.name.endswith(".all.jsonl") if per_annotation is None else per_annotation
    try:
        recs = read_records(records, order=box_order or "xyxy", unique=not many)
        if not recs:
            raise InputError(f"{records}: no records (an empty file)")
    except InputError as exc:
        _fail(exc)
    n_def = sum(len(r.defects) for r in recs)
    clean = sum(not r.defects for r in recs)
    if many:
        n_img = len({r.image_id for r in recs})
        typer.echo(f"{records}: {len(recs)} annotations of {n_img} images, {n_def} defects, {clean} clean: valid")
    else:
        typer.echo(f"{records}: {len(recs)} records, {n_def} defects, {clean} clean images: valid")


@app.command("import-sdg30k")
def import_sdg30k_cmd(
    src: Annotated[Path, typer.Argument(help="Released annotations JSONL (annotations/train.jsonl or test.jsonl).")],
    out: Annotated[Path, typer.Option("--out", help="Records JSONL to write.")],
    rejects: Annotated[
        Optional[Path], typer.Option("--rejects", help="Rows that could not be converted, with reasons.")
    ] = None,
    source: Annotated[
        str, typer.Option("--source", help="translated (English, importance), raw (per-type fields) or auto.")
    ] = "auto",
    translated_order: Annotated[
        str, typer.Option("--translated-order", help="Box order of ann_translated_bboxes (paper: xyxy).")
    ] = "xyxy",
    raw_order: Annotated[
        str, typer.Option("--raw-order", help="Box order of artifact_/misalignment_bboxes (Gemini: yxyx).")
    ] = "yxyx",
    split: Annotated[
        Optional[str], typer.Option("--split", help="train | test (default: from the file name).")
    ] = None,
    image_root: Annotated[
        Optional[Path], typer.Option("--image-root", help="Folder the release's filepaths are relative to.")
    ] = None,
) -> None:
    """Bring the published SDG-30K annotations into core records, and check the raw box order on the data.

    Usage: sdg import-sdg30k SDG-30K/annotations/test.jsonl --out test.records.jsonl
    """
    from sdg_data.importers.sdg30k import import_sdg30k
    from sdg_data.jsonl import InputError

    for name, value in (("--translated-order", translated_order), ("--raw-order", raw_order)):
        if value not in ("xyxy", "yxyx"):
            _fail(ValueError(f"{name} must be xyxy or yxyx, got {value!r}"))
    if source not in ("translated", "raw", "auto"):
        _fail(ValueError(f"--source must be translated, raw or auto, got {source!r}"))
    try:
        stats, agreement = import_sdg30k(src, out, rejects, split, source, translated_order, raw_order, image_root)
    except InputError as exc:
        _fail(exc)
    typer.echo(
        f"read {stats.read}: wrote {stats.written} ({stats.clean} clean), rejected {stats.rejected}; "
        f"placeholder boxes dropped {stats.placeholders_dropped}; defect source {json.dumps(stats.by_source)}"
    )
    if agreement["images"]:
        typer.echo(
            f"raw box order check on {agreement['images']} images: mean IoU with translated boxes "
            f"{agreement['mean_iou_raw_as_xyxy']:.3f} if raw is xyxy, {agreement['mean_iou_raw_as_yxyx']:.3f} if yxyx"
        )


@app.command("distill")
def distill_cmd(
    records: Annotated[Path, typer.Argument(help="Annotated records JSONL (image_path relative to it, caption).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for distilled.jsonl, rejects.jsonl, summary.json.")],
    teacher: Annotated[
        Optional[str],
        typer.Option(
            "--teacher", help="template (offline, deterministic) or openai (any OpenAI-compatible VLM endpoint)."
        ),
    ] = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="Chat-completions endpoint base URL.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Teacher model name at that endpoint.")] = None,
    max_in_flight: Annotated[Optional[int], typer.Option("--max-in-flight", help="Requests in flight.")] = None,
    template: Annotated[
        Optional[str], typer.Option("--template", help="Teacher prompt: a name under distill/prompts/ or DIR/NAME.")
    ] = None,
    image_root: ImageRootOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Turn each annotated image into the detector's target: a three-step think, English descriptions and
    importance scores, keeping the human boxes and labels exactly.

    Usage: sdg distill annotated.jsonl --out work/distill                      (offline template teacher)
           OPENAI_API_KEY=... sdg distill annotated.jsonl --out work/distill --teacher openai \
               --base-url http://localhost:8000/v1 --model Qwen/Qwen3-VL-235B-A22B-Instruct

    Finished records are cached under OUT/cache: rerunning after a crash sends only what is missing.
    """
    from distill.config import DistillConfig
    from distill.runner import TransportError, distill_file
    from sdg_data.config import ConfigError, load_config
    from sdg_data.jsonl import InputError

    try:
        cfg = load_config(
            DistillConfig,
            config,
            dict(
                teacher=teacher,
                base_url=base_url,
                model=model,
                max_in_flight=max_in_flight,
                template=template,
                image_roots=[str(p) for p in image_root] if image_root else None,
            ),
        )
        s = distill_file(records, out, cfg)
    except (ConfigError, InputError, ValueError, OSError, TransportError) as exc:
        _fail(exc)
    typer.echo(
        f"read {s['read']}: distilled {s['distilled']}, rejected {s['rejected']} {s['rejected_by_stage']}; "
        f"{s['from_cache']} from cache, {s['this_run']['requests']} requests this run, "
        f"{s['transient_retries']} transient retries, {s['rule_retries']} rule retries; all runs into {out}: "
        f"{s['requests']} requests, tokens {s['prompt_tokens']} in / {s['completion_tokens']} out, "
        f"cost ${s['cost_usd']}"
    )
    typer.echo(f"output: {out}/distilled.jsonl, {out}/rejects.jsonl, {out}/summary.json")


@app.command("build")
def build_cmd(
    records: Annotated[Path, typer.Argument(help="Distilled records JSONL (from sdg distill).")],
    out: Annotated[Path, typer.Option("--out", help="Dataset folder to write (Hugging Face layout).")],
    test_fraction: Annotated[
        Optional[float], typer.Option("--test-fraction", help="Share of images held out, by whole prompts.")
    ] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="SFT copies per image (jittered after 1).")] = None,
    jitter: Annotated[Optional[int], typer.Option("--jitter", help="Jitter amplitude in grid units.")] = None,
    prompt_template: Annotated[
        Optional[str], typer.Option("--prompt-template", help="Detector user prompt file ({caption} placeholder).")
    ] = None,
    push_to_hub: Annotated[
        Optional[str],
        typer.Option("--push-to-hub", help="Upload the folder to this Hub dataset repo (needs HF_TOKEN)."),
    ] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the Hub repo as private.")] = False,
    split_from: Annotated[
        Optional[str],
        typer.Option(
            "--split-from",
            help="Which split wins: 'records' (a split a record carries, e.g. from sdg generate, is kept; "
            "--test-fraction splits the rest) or 'fraction' (re-split every record by --test-fraction).",
        ),
    ] = None,
    image_root: ImageRootOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Write the SDG dataset: configs annotations, sft (jittered pairs), grpo and test, as parquet shards and a
    dataset card that datasets.load_dataset(OUT, NAME) reads.

    Usage: sdg build work/distill/distilled.jsonl --out work/dataset
    """
    from sdg_data.build import BuildConfig, build_dataset
    from sdg_data.config import ConfigError, load_config
    from sdg_data.jsonl import InputError

    try:
        cfg = load_config(
            BuildConfig,
            config,
            dict(
                test_fraction=test_fraction,
                epochs=epochs,
                jitter=jitter,
                prompt_template=prompt_template,
                split_from=split_from,
                image_roots=[str(p) for p in image_root] if image_root else None,
            ),
        )
        s = build_dataset(records, out, cfg)
    except (ConfigError, InputError, ValueError, OSError) as exc:
        _fail(exc)
    for w in s.get("warnings", []):
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"read {s['read']}: built {s['built']}, rejected {s['rejected']}; rows {json.dumps(s['rows'])}")
    typer.echo(
        f"size {s['total_bytes'] / 1e6:.2f} MB; unique image bytes {s['unique_image_bytes'] / 1e6:.2f} MB; "
        f"sft {s['sft']['bytes'] / 1e6:.2f} MB = {s['sft']['ratio']:.3f} x (train image bytes + text)"
    )
    if push_to_hub:
        from sdg_data.hub import push_dataset

        try:
            push_dataset(out, push_to_hub, private)
        except RuntimeError as exc:
            _fail(exc)
        typer.echo(f"pushed to https://huggingface.co/datasets/{push_to_hub}")
    typer.echo(f"dataset: {out}")


@app.command("stats")
def stats_cmd(
    dataset: Annotated[Path, typer.Argument(help="A dataset folder written by sdg build.")],
    report: Annotated[
        Optional[Path], typer.Option("--report", help="HTML report path (default DATASET/report.html).")
    ] = None,
) -> None:
    """Composition, boxes per image by generator and label, importance, box sizes, description lengths and
    teacher rejects: a table here and an HTML report with PNG plots."""
    from sdg_data.stats import dataset_stats, format_stats, write_report

    try:
        s = dataset_stats(dataset)
        path = write_report(s, report or dataset / "report.html")
    except (ValueError, OSError) as exc:
        _fail(exc)
    typer.echo(format_stats(s))
    typer.echo(f"report: {path}")


@app.command("viz")
def viz_cmd(
    source: Annotated[Path, typer.Argument(help="Records JSONL (with image paths) or a dataset folder.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the annotated PNGs.")],
    limit: Annotated[Optional[int], typer.Option("--limit", help="Draw at most this many images.")] = None,
    ids: Annotated[Optional[str], typer.Option("--ids", help="Comma-separated image ids to draw.")] = None,
    image_root: ImageRootOpt = None,
) -> None:
    """Draw boxes, labels and importance on the images, one PNG each, for checks by eye. Files are named from
    the image ids made safe for paths; records whose image fails its checks go to OUT/viz_rejects.jsonl."""
    from sdg_data.jsonl import InputError
    from sdg_data.viz import visualize

    try:
        n, rejects = visualize(source, out, limit, set(ids.split(",")) if ids else None, image_root)
    except (InputError, ValueError, OSError) as exc:
        _fail(exc)
    extra = f"; {len(rejects)} rejected (see {out / 'viz_rejects.jsonl'})" if rejects else ""
    typer.echo(f"drew {n} images into {out}{extra}")


@app.command("generate")
def generate_cmd(
    prompts: Annotated[
        str,
        typer.Option(
            "--prompts",
            help="JSONL / CSV / Parquet / TXT with a 'prompt' or 'caption' column, or a Hugging Face dataset "
            "(NAME or NAME:SPLIT). An optional 'split' column fixes a prompt's split.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder: images/, manifest.jsonl, rejects, summary.")],
    generator: Annotated[
        Optional[list[str]],
        typer.Option(
            "--generator",
            help="Repeatable. FLUX.2-dev, Z-Image-Turbo, LongCat-Image, SANA-1.5-1.6B (default: all four), or any "
            "diffusers model id or local pipeline folder.",
        ),
    ] = None,
    model_root: Annotated[
        Optional[Path],
        typer.Option("--model-root", help="Folder with local copies: ROOT/flux2, z-image, longcat, sana."),
    ] = None,
    seeds: Annotated[Optional[int], typer.Option("--seeds", help="Images per prompt and generator.")] = None,
    height: Annotated[Optional[int], typer.Option("--height", help="Image height (default 1024).")] = None,
    width: Annotated[Optional[int], typer.Option("--width", help="Image width (default 1024).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Denoising steps (default: the card's).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Prompts per pipeline call.")] = None,
    assign: Annotated[
        Optional[str], typer.Option("--assign", help="spread (each prompt to one generator) or all.")
    ] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N prompts.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Generate images from prompts with the SDG-30K generators; write PNGs and a manifest of records.

    Usage: sdg generate --prompts prompts.jsonl --out gen [--generator Z-Image-Turbo] [--seeds 2]
           accelerate launch --num_processes 8 -m sdg_data.cli generate --prompts ... --out gen   (one GPU a rank)

    A rerun into the same --out skips finished images. Image ids hash generator, prompt, seed and settings.
    """
    from sdg_data.config import ConfigError, load_config

    try:
        from sdg_data.generate.runner import GenerateConfig, generate

        overrides: dict = dict(
            seeds=seeds,
            height=height,
            width=width,
            steps=steps,
            batch_size=batch_size,
            assign=assign,
            limit=limit,
            generators=list(generator) if generator else None,
        )
        cfg = load_config(GenerateConfig, config, overrides)
        if model_root is not None:
            from sdg_data.generate.registry import ALIASES

            found = {name: str(model_root / alias) for alias, name in ALIASES.items() if (model_root / alias).is_dir()}
            cfg.model_paths = {**cfg.model_paths, **found}
        s = generate(prompts, out, cfg)
    except ImportError as exc:
        _fail(ImportError(f"{exc}; install the gen extra: pip install 'sdg[gen]'"))
    except (ConfigError, ValueError, OSError) as exc:
        _fail(exc)
    if "images" not in s:  # a non-zero rank: rank 0 reports
        return
    typer.echo(
        f"prompts: {s['prompt_rows']} read, {s['prompts_rejected']} rejected; images: {s['images']} of "
        f"{s['planned_images']} planned, {s['failed']} failed; by generator {json.dumps(s['by_generator'])}; "
        f"by split {json.dumps(s['by_split'])}"
    )
    typer.echo(f"output: {out}/manifest.jsonl, {out}/generate_rejects.jsonl, {out}/generate_summary.json")


@app.command("detect")
def detect_cmd(
    source: Annotated[
        Path,
        typer.Argument(
            help="A folder of images (captions in NAME.txt beside them), a records JSONL, a parquet shard, or a "
            "folder written by sdg build (its test config)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for predictions.jsonl, rejects and summary.")],
    model: Annotated[
        Optional[str],
        typer.Option(
            "--model", help="Checkpoint id or folder (default P1n3/sdg-detector-grpo); served name for openai."
        ),
    ] = None,
    backend: Annotated[
        Optional[str], typer.Option("--backend", help="transformers (local, batched) or openai (vLLM/SGLang server).")
    ] = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="Server URL for --backend openai.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per generate call.")] = None,
    max_in_flight: Annotated[
        Optional[int], typer.Option("--max-in-flight", help="Requests in flight (openai).")
    ] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens", help="Longest response.")] = None,
    temperature: Annotated[Optional[float], typer.Option("--temperature", help="0 = greedy (default).")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="auto, bfloat16, float16 or float32.")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Dataset folder: the split to read (test).")] = None,
    dataset_config: Annotated[
        Optional[str], typer.Option("--dataset-config", help="Dataset folder: the config to read (test).")
    ] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N images.")] = None,
    prompt_template: Annotated[
        Optional[str], typer.Option("--prompt-template", help="Detector user prompt file ({caption} placeholder).")
    ] = None,
    box_order: BoxOrderOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Run an SDG detector over images; write predictions that sdg eval and sdg annotate predict read.

    Usage: sdg detect outputs/dataset --out outputs/detect --model P1n3/sdg-detector-grpo
           sdg eval --gt outputs/dataset --pred outputs/detect/predictions.jsonl

    Served: python -m sglang.launch_server --model-path P1n3/sdg-detector-grpo --served-model-name sdg-detector
            --port 17142, then sdg detect DIR --out OUT --backend openai --model sdg-detector
            (key, if any, in $SDG_DETECTOR_API_KEY). Rerunning into the same --out only does what is missing.
    """
    from sdg_data.config import ConfigError, load_config

    try:
        from train.detect import DetectConfig, detect

        cfg = load_config(
            DetectConfig,
            config,
            dict(
                model=model,
                backend=backend,
                base_url=base_url,
                batch_size=batch_size,
                max_in_flight=max_in_flight,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                device=device,
                dtype=dtype,
                split=split,
                dataset_config=dataset_config,
                limit=limit,
                prompt_template=prompt_template,
                box_order=box_order,
            ),
        )
        s = detect(source, out, cfg)
    except ImportError as exc:
        _fail(ImportError(f"{exc}; install the train extra: pip install 'sdg[train]'"))
    except (ConfigError, ValueError, OSError, RuntimeError) as exc:  # RuntimeError: the server refused the key
        _fail(exc)
    typer.echo(
        f"read {s['read']}: predicted {s['predicted']} ({s['format_ok']} pass the format check, "
        f"{s['format_fail']} fail), rejected {s['rejected']}, resumed {s['resumed']}; {s['seconds']} s"
    )
    typer.echo(f"output: {out}/predictions.jsonl, {out}/detect_rejects.jsonl, {out}/detect_summary.json")


annotate_app = typer.Typer(
    help="Annotation in Label Studio: serve the server, init the SDG project, push tasks and detector "
    "pre-annotations, pull annotations as records, measure agreement. The server URL and project come from "
    "--config (annotation/recipes/local.yaml); the API token from $LABEL_STUDIO_API_KEY (never printed).",
    no_args_is_help=True,
)
app.add_typer(annotate_app, name="annotate")
AnnConfigOpt = Annotated[
    Optional[Path], typer.Option("--config", help="YAML of AnnotateConfig (url, image_root, overlap, ...).")
]
UrlOpt = Annotated[Optional[str], typer.Option("--url", help="Label Studio URL (default http://127.0.0.1:8089).")]
RootOpt = Annotated[
    Optional[str], typer.Option("--image-root", help="Folder the images are served from; task paths stay inside.")
]


def _ann_cfg(config, **overrides):
    from annotation.config import AnnotateConfig, resolve_server
    from sdg_data.config import load_config

    cfg = load_config(AnnotateConfig, config, overrides)
    return resolve_server(cfg, url_given=overrides.get("url") is not None)


def _ann_run(fn):
    """Run an annotate action; its failures become one red line and exit code 2."""
    from annotation.client import AnnotateError
    from annotation.server import ServerError
    from sdg_data.config import ConfigError

    try:
        return fn()
    except ImportError as exc:
        _fail(ImportError(f"{exc}; install the annotate extra: pip install 'sdg[annotate]'"))
    except (AnnotateError, ServerError, ConfigError, ValueError, OSError) as exc:
        _fail(exc)


@annotate_app.command("serve")
def annotate_serve(
    port: Annotated[Optional[int], typer.Option("--port", help="Port (default 8089).")] = None,
    host: Annotated[Optional[str], typer.Option("--host", help="Bind address (default 127.0.0.1).")] = None,
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", help="Database and media folder.")] = None,
    image_root: RootOpt = None,
    label_studio_bin: Annotated[
        Optional[str],
        typer.Option(
            "--label-studio-bin",
            help="The label-studio executable (default .venv-ls/bin/label-studio, or $SDG_LABEL_STUDIO_BIN).",
        ),
    ] = None,
    config: AnnConfigOpt = None,
) -> None:
    """Run Label Studio (pinned, in .venv-ls) for the SDG project, locked down: local bind, invite-only
    sign-up, local files only from the image root, no telemetry. Needs LABEL_STUDIO_USERNAME,
    LABEL_STUDIO_PASSWORD (the admin) and LABEL_STUDIO_API_KEY (the admin's token) in the environment.

    The first start of a new data folder builds its database (a minute or two). Ctrl+C, SIGTERM or
    'sdg annotate stop' (from another shell) stop the server and its workers. While it runs, the other annotate
    commands find its URL in DATA_DIR/server.json, so a --port given here need not be repeated."""
    from annotation.server import serve

    cfg = _ann_run(
        lambda: _ann_cfg(
            config, port=port, host=host, data_dir=data_dir, image_root=image_root, label_studio_bin=label_studio_bin
        )
    )
    raise typer.Exit(code=_ann_run(lambda: serve(cfg)) or 0)


@annotate_app.command("stop")
def annotate_stop(
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", help="The data folder serve was given.")] = None,
    config: AnnConfigOpt = None,
) -> None:
    """Stop the server that 'sdg annotate serve' started for this data folder (and its workers)."""
    from annotation.server import stop_server

    cfg = _ann_run(lambda: _ann_cfg(config, data_dir=data_dir))
    state = _ann_run(lambda: stop_server(cfg))
    if state is None:
        typer.echo(f"no server running for {cfg.data_dir}")
    else:
        typer.echo(f"stopped Label Studio at {state.get('url')} (pid {state.get('pid')})")


@annotate_app.command("init")
def annotate_init(url: UrlOpt = None, image_root: RootOpt = None, config: AnnConfigOpt = None) -> None:
    """Create or update the SDG project (labeling config, guidelines, overlap, image storage); idempotent."""
    from annotation.client import Connection, ensure_project, project_settings

    def run():
        cfg = _ann_cfg(config, url=url, image_root=image_root)
        project, created = ensure_project(Connection(cfg))
        return project, created

    project, created = _ann_run(run)
    typer.echo(f"{'created' if created else 'updated'} project: {json.dumps(project_settings(project))}")


@annotate_app.command("push")
def annotate_push(
    samples: Annotated[Path, typer.Argument(help="Records JSONL (sdg generate's manifest.jsonl): image, caption...")],
    url: UrlOpt = None,
    image_root: RootOpt = None,
    config: AnnConfigOpt = None,
) -> None:
    """Import images as tasks, idempotent by image_id (a second push creates nothing); checks the server's count.
    Rejects (missing file, path outside the image root, duplicate ids) go to SAMPLES.push_rejects.jsonl."""
    from annotation.client import Connection
    from annotation.push import push

    s = _ann_run(lambda: push(samples, Connection(_ann_cfg(config, url=url, image_root=image_root))))
    typer.echo(
        f"read {s['read']}: created {s['created']}, already on the server {s['already_on_server']}, "
        f"rejected {s['rejected']}; {s['tasks_on_server']} tasks in project {s['project']}"
    )


@annotate_app.command("predict")
def annotate_predict(
    predictions: Annotated[Path, typer.Argument(help="Detector output JSONL: raw 'response' text or 'defects'.")],
    model_version: Annotated[str, typer.Option("--model-version", help="Name annotators see on the boxes.")],
    url: UrlOpt = None,
    image_root: RootOpt = None,
    config: AnnConfigOpt = None,
) -> None:
    """Import a detector's boxes as pre-annotations (validated here first) and show them prefilled."""
    from annotation.client import Connection
    from annotation.predict import predict

    s = _ann_run(
        lambda: predict(predictions, Connection(_ann_cfg(config, url=url, image_root=image_root)), model_version)
    )
    typer.echo(f"read {s['read']}: created {s['created']} predictions ({model_version}), rejected {s['rejected']}")


@annotate_app.command("pull")
def annotate_pull(
    out: Annotated[Path, typer.Option("--out", help="Records JSONL, one per image (plus .all, .rejects, .summary).")],
    since: Annotated[
        Optional[str], typer.Option("--since", help="Only tasks updated after this ISO time (UTC).")
    ] = None,
    from_export: Annotated[
        Optional[Path], typer.Option("--from-export", help="A JSON export downloaded from the UI, not the server.")
    ] = None,
    url: UrlOpt = None,
    image_root: RootOpt = None,
    config: AnnConfigOpt = None,
) -> None:
    """Annotations -> core records (box_2d on the 0-1000 grid, pixel boxes, origin, annotator, lead time).
    Every annotation is kept in OUT.all.jsonl; the consolidation policy picks one per image for OUT."""
    from annotation.pull import pull, pull_from_export

    def run():
        cfg = _ann_cfg(config, url=url, image_root=image_root)
        if from_export is not None:
            return pull_from_export(from_export, out, cfg)
        from annotation.client import Connection

        return pull(Connection(cfg), out, since)

    s = _ann_run(run)
    bad_tasks = f", {s['malformed_tasks']} malformed tasks rejected" if s.get("malformed_tasks") else ""
    typer.echo(
        f"{s['tasks']} tasks, {s['annotations']} annotations: {s['valid']} valid, {s['rejected']} rejected, "
        f"{s['cancelled']} skipped{bad_tasks}; {s['images']} images ({s['clean_images']} clean) -> {out}"
    )


@annotate_app.command("agreement")
def annotate_agreement(
    annotations: Annotated[Path, typer.Argument(help="The .all.jsonl file written by sdg annotate pull.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="JSON report.")] = None,
) -> None:
    """Inter-annotator agreement per pair and overall: BoxF1@0.5 and DetTypeF1 per label, importance MAE."""
    from annotation.agreement import agreement_file, format_agreement

    report = _ann_run(lambda: agreement_file(annotations, out))
    typer.echo(format_agreement(report))


@annotate_app.command("status")
def annotate_status(url: UrlOpt = None, config: AnnConfigOpt = None) -> None:
    """Tasks, annotated, clean, skipped, and per annotator."""
    from annotation.client import Connection
    from annotation.status import format_status, status

    s = _ann_run(lambda: status(Connection(_ann_cfg(config, url=url))))
    typer.echo(format_status(s))


train_app = typer.Typer(
    help="Train the detector: sdg train sft|grpo --config RECIPE.yaml [--flag value ...]. Every option of the "
    "recipe (trl's SFTConfig/GRPOConfig, ModelConfig and the SDG script arguments) can be given as a flag; "
    "'sdg train sft --help' lists them. Multi-GPU: accelerate launch --config_file train/launch/zero2_1x8.yaml "
    "train/sft.py --config ...",
    no_args_is_help=True,
)
app.add_typer(train_app, name="train")
_FORWARD = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def _forward(script: str, ctx: typer.Context) -> None:
    try:
        module = __import__(f"train.{script}", fromlist=["main"])
    except ImportError as exc:
        _fail(ImportError(f"{exc}; install the train extra: pip install 'sdg[train]'"))
    try:
        module.main(list(ctx.args))
    except ValueError as exc:  # a recipe or batch that does not fit: one line, not a traceback
        _fail(exc)


@train_app.command("sft", context_settings=_FORWARD, add_help_option=False)
def train_sft_cmd(ctx: typer.Context) -> None:
    """Detector SFT (train/sft.py): full fine-tune, vision frozen, loss on the response only."""
    _forward("sft", ctx)


@train_app.command("grpo", context_settings=_FORWARD, add_help_option=False)
def train_grpo_cmd(ctx: typer.Context) -> None:
    """Detector GRPO (train/grpo.py) with the SDG reward, from the SFT checkpoint."""
    _forward("grpo", ctx)


def main() -> None:
    """The ``sdg`` entry point: any error a command did not turn into its own line still ends as one red line
    (with SDG_DEBUG=1 it raises, for the traceback)."""
    import os
    import sys

    from sdg_data.secrets import install_log_filter

    install_log_filter()
    try:
        app()
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.RED, err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001  the last boundary: never a traceback for a user
        if os.environ.get("SDG_DEBUG"):
            raise
        typer.secho(
            f"error: {_one_line(exc)} ({type(exc).__name__}; set SDG_DEBUG=1 for the traceback)",
            fg=typer.colors.RED,
            err=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
