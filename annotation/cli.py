"""``sdg annotate ...``: Label Studio commands. Their settings are the fields of
:class:`~annotation.config.AnnotateConfig` (server fields only where they apply)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from annotation.config import AnnotateConfig, resolve_server
from sdg_data.io.cli_kit import arg, config_command, echo, guarded, opt, printable


HELP = (
    "Annotation in Label Studio: serve the server, init the SDG project, push tasks and detector pre-annotations, "
    "pull annotations as records, measure agreement. Settings come from flags or --config "
    "(a YAML file or a bundled recipe: sdg recipes); the API token from $LABEL_STUDIO_API_KEY (never printed)."
)
ALL = tuple(AnnotateConfig.__dataclass_fields__)
SERVE = ("host", "port", "data_dir", "database", "label_studio_bin", "image_root", "token_env")  # serve's settings
# Every client command talks to the server the same way; each then takes only the settings it uses as flags (a
# recipe may still hold them all: one AnnotateConfig for the team).
CLIENT = ("url", "token_env", "timeout_s", "max_retries", "backoff_base_s", "backoff_max_s", "project_title",
          "data_dir", "image_root")  # fmt: skip
PULL = ("consolidation", "primary_annotators", "reviewers", "check_image_size", "consensus_iou", "consensus_quorum",
        "consensus_weights", "embedder", "gold_file", "work_dir", "gold_min_tasks", "gold_min_score")  # fmt: skip
GOLD = ("gold_file", "gold_share", "team_size", "work_dir", "chunk_size")
OWN = {
    "init": (*CLIENT, "overlap", "guidelines", "side_panels"),
    "push": (*CLIENT, "chunk_size", "work_dir", "gold_file", "gold_share", "team_size"),
    "gold-add": (*CLIENT, *GOLD),
    "escalate": (*CLIENT, *PULL, "escalate_below", "escalate_max"),
    "predict": (*CLIENT, "chunk_size", "work_dir"),
    "pull": (*CLIENT, *PULL),
    "status": (*CLIENT, *PULL, "overlap", "gold_bootstrap"),
    "disagreements": (*CLIENT, *PULL),
    "judge-init": (*CLIENT, "judge_title", "overlap"),
    "judge-push": (*CLIENT, "judge_title", "judge_seed", "chunk_size", "work_dir"),
    "judge-pull": (*CLIENT, "judge_title"),
}


def _but(keep: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n for n in ALL if n not in keep)


def _own(command: str) -> tuple[str, ...]:
    """The settings a command does not take as flags."""
    return _but(OWN[command])


def _server(cfg: AnnotateConfig) -> AnnotateConfig:
    return resolve_server(cfg, url_given=cfg.url != AnnotateConfig.url)


def _conn(cfg: AnnotateConfig):
    from annotation.client import Connection

    return Connection(_server(cfg))


def run_serve(cfg: AnnotateConfig) -> None:
    """Run Label Studio (pinned, in an environment of its own) for the SDG project, locked down: local bind,
    invite-only sign-up, local files only from the image root, no telemetry. Needs LABEL_STUDIO_USERNAME,
    LABEL_STUDIO_PASSWORD (the admin) and LABEL_STUDIO_API_KEY (the admin's token) in the environment.

    The first start of a new data folder builds its database (a minute or two). Ctrl+C, SIGTERM or
    'sdg annotate stop' (from another shell) stop the server and its workers. While it runs, the other annotate
    commands find it (its data folder's state, or the last server you started, from any folder), so a --port given
    here need not be repeated. The banner prints the invite link annotators sign up with."""
    from annotation.server import serve

    raise typer.Exit(code=serve(_server(cfg)) or 0)


def run_stop(cfg: AnnotateConfig) -> None:
    """Stop the server that 'sdg annotate serve' started for this data folder (and its workers)."""
    from annotation.server import stop_server

    state = stop_server(cfg)
    if state is None:
        echo(f"no server running for {cfg.data_dir}")
    else:
        echo(f"stopped Label Studio at {state.get('url')} (pid {state.get('pid')})")


def run_init(cfg: AnnotateConfig) -> None:
    """Create or update the SDG project (labeling config, guidelines, overlap, image storage); idempotent."""
    import json

    from annotation.client import ensure_project, project_settings
    from annotation.server import INVITE_STEPS, invite_url

    conn = _conn(cfg)
    project, created = ensure_project(conn)
    echo(f"{'created' if created else 'updated'} project: {json.dumps(project_settings(project))}")
    invite = invite_url(cfg.url, conn._token)
    echo(f"annotators sign up with the invite link {invite}" if invite else f"annotators: {INVITE_STEPS}")


def run_push(cfg: AnnotateConfig, samples: Path, order: Path | None) -> None:
    """Import images as tasks, idempotent by image_id (a second push creates nothing); checks the server's count.
    Rejects (missing file, path outside the image root, duplicate ids) go to WORK_DIR/SAMPLES.push.rejects.jsonl
    (outputs/annotate/ by default; never beside the input). Exits 1 when no line could be pushed.

    --order puts the images a detector is least sure about first in the queue the server hands out (sdg detect
    --samples K writes their uncertainty), gold tasks spread through it; the project switches to Label Studio's
    uncertainty sampling. A later push or gold add keeps that order."""
    from annotation.push import push
    from annotation.queue import keep_queue, order_queue
    from sdg_data.io.report import require_kept

    conn = _conn(cfg)
    s = push(samples, conn)
    echo(
        f"read {s['read']}: created {s['created']}, already on the server {s['already_on_server']}, "
        f"rejected {s['rejected']}; {s['tasks_on_server']} tasks in project {s['project']}; "
        f"report: {s['reports']}/{samples.stem}.push.summary.json"
    )
    if order is not None:
        q = order_queue(conn, order)
        echo(
            f"queue: {q['prioritised']} of {q['tasks']} tasks ordered by {order} ({q['rejected']} lines rejected), "
            f"{q['gold']} gold tasks, one after every {q['gold_every']} (team of {q['team']}); sampling: uncertainty"
        )
    else:
        q = keep_queue(conn)
        if q["applied"]:
            echo(f"queue kept ({q['model_version']}): {q['tasks']} tasks, {q['created']} newly placed")
    require_kept(s, Path(s["reports"]) / f"{samples.stem}.push.rejects.jsonl")


def run_gold_add(cfg: AnnotateConfig, records: Path) -> None:
    """Add reference-annotated images as gold: their records stay in the gold store on this machine (never on the
    server); their images become ordinary tasks (same data, URL form and prefill as any other), handed to every
    annotator and spread through the queue so that about gold_share of each annotator's tasks are gold. Status
    scores each annotator against them; pull keeps gold annotations out of the dataset. A record whose id or file
    name says gold (gold, honeypot, reference) is refused: annotators see both."""
    from annotation.queue import add_gold
    from sdg_data.io.report import require_kept

    s = add_gold(_conn(cfg), records)
    q = s["queue"]
    echo(
        f"read {s['read']}: {s['gold_added']} gold tasks added, {s['rejected']} rejected; {s['gold_in_store']} in "
        f"{s['store']}; every annotator gets them, one after every {q.get('gold_every')} ordinary tasks (team of "
        f"{q.get('team')}, gold_share {cfg.gold_share})"
    )
    require_kept(s, Path(cfg.work_dir) / f"{records.stem}.gold.rejects.jsonl", "gold records")


def run_escalate(cfg: AnnotateConfig, out: Path, dry_run: bool) -> None:
    """One more annotator for each task whose annotators disagree: mean pairwise box F1 below escalate_below and
    fewer than escalate_max annotators. The server then hands the task to someone who has not done it. OUT lists
    every compared task with its agreement and the reason for the decision."""
    from annotation.escalate import escalate

    s = escalate(_conn(cfg), out, dry_run)
    verb = "would get" if dry_run else "get"
    echo(
        f"{s['tasks_compared']} tasks with several annotators; {s['would_escalate']} {verb} one more annotator "
        f"(agreement < {s['threshold']}, at most {s['escalate_max']}); {s['at_most_already']} below but full -> {out}"
    )
    for r in [r for r in s["rows"] if r["escalate"]][:20]:
        echo(f"  task {r['task_id']}  {r['image_id']}: {r['why']}")


def run_predict(cfg: AnnotateConfig, predictions: Path, model_version: str) -> None:
    """Import a detector's boxes as pre-annotations (validated here first) and show them prefilled. A rerun with the
    same --model-version replaces that version's predictions in place (or leaves identical ones alone): never a
    second prefilled tab. Only the predictions and the model version shown change; overlap and guidelines stay."""
    from annotation.predict import predict
    from sdg_data.io.report import require_kept

    s = predict(predictions, _conn(cfg), model_version)
    echo(
        f"read {s['read']}: {model_version}: created {s['created']}, replaced {s['replaced']}, unchanged "
        f"{s['unchanged']}, rejected {s['rejected']}"
        + (f", {s['repeats_removed']} repeated predictions removed" if s["repeats_removed"] else "")
        + f"; annotators see {s['model_version_shown'] or 'no predictions'}; "
        f"report: {s['reports']}/{predictions.stem}.predict.summary.json"
    )
    require_kept(s, Path(s["reports"]) / f"{predictions.stem}.predict.rejects.jsonl", "predictions")


def run_pull(cfg: AnnotateConfig, out: Path, since: str | None, from_export: Path | None, only_reviewed: bool) -> None:
    """Annotations -> core records (box_2d on the 0-1000 grid, pixel boxes, origin, annotator, lead time).
    Every annotation is kept in OUT.all.jsonl (those of gold tasks in OUT.gold.jsonl, never in OUT); the
    consolidation policy makes one record per image for OUT (consensus: what no quorum drew goes to
    OUT.disagreements.jsonl, with who drew it).
    --only-reviewed: OUT holds only the images a reviewer (--reviewers) annotated, with the review's record."""
    from annotation.pull import pull, pull_from_export

    if from_export is not None:
        s = pull_from_export(from_export, out, cfg, only_reviewed)
    else:
        s = pull(_conn(cfg), out, since, only_reviewed)
    from sdg_data.io.report import require_kept

    bad_tasks = f", {s['malformed_tasks']} malformed tasks rejected" if s.get("malformed_tasks") else ""
    unreviewed = f", {s['unreviewed_images']} not reviewed yet (left out)" if only_reviewed else ""
    echo(
        f"{s['tasks']} tasks, {s['annotations']} annotations: {s['valid']} valid, {s['rejected']} rejected, "
        f"{s['cancelled']} skipped{bad_tasks}; {s['images']} images ({s['clean_images']} clean){unreviewed} -> {out}"
    )
    if s.get("gold_annotations"):
        echo(f"{s['gold_annotations']} annotations of gold tasks kept out of the records -> {out.stem}.gold.jsonl")
    if "consensus_disagreements" in s:
        echo(
            f"consensus: {s['consensus_disagreements']} boxes no quorum drew, on {s['images_with_disagreements']} "
            f"images; {s['unresolved_images']} images without a verdict (left out) -> {out.stem}.disagreements.jsonl"
        )
    if s.get("consensus_weights") == {}:
        typer.secho(
            f"warning: consensus_weights: no annotator has {cfg.gold_min_tasks} gold tasks yet: the votes are not "
            "weighted",
            fg=typer.colors.YELLOW,
            err=True,
        )
    if s.get("hint"):
        typer.secho(printable(f"warning: {s['hint']}"), fg=typer.colors.YELLOW, err=True)
    if not s["read"]:
        echo("no annotations yet: nothing to pull")
    require_kept(s, out.parent / f"{out.stem}.pull.rejects.jsonl", "annotations", empty_ok=True)


def agreement_cmd(
    annotations: Path = typer.Argument(..., help="The .all.jsonl file written by sdg annotate pull."),
    out: Optional[Path] = typer.Option(None, "--out", help="JSON report."),
    max_annotators_per_image: int = typer.Option(
        20,
        "--max-annotators-per-image",
        min=2,
        max=1000,
        help="An image with more annotators is left out (and counted): its pairs grow with their number squared.",
    ),  # fmt: skip
    embedder: str = typer.Option(
        "lexical",
        "--embedder",
        help="Description cosine of matched boxes: lexical (offline), a model id or folder (sdg eval's default: "
        "Qwen/Qwen3-Embedding-0.6B), none.",
    ),  # fmt: skip
) -> None:
    """Inter-annotator agreement per pair and overall: BoxF1@0.5, DetTypeF1, importance MAE and description cosine
    per label; and each annotator against the consensus of the others on the images they share."""
    from annotation.agreement import agreement_file, format_agreement

    report = agreement_file(annotations, out, max_annotators_per_image, embedder)
    sibling = annotations.with_name(annotations.name.removesuffix(".jsonl") + ".all.jsonl")
    if len(report["annotators"]) < 2 and not annotations.name.endswith(".all.jsonl") and sibling.is_file():
        raise ValueError(
            f"{annotations} is pull's one-record-per-image file; agreement compares every annotation: "
            f"sdg annotate agreement {sibling}"
        )
    if len(report["annotators"]) < 2:
        who = ", ".join(report["annotators"]) or "none"
        raise ValueError(
            f"{annotations}: agreement needs annotations of the same images by two or more annotators; this file "
            f"has {len(report['annotators'])} ({who}). Set --overlap 2 at init so tasks go to two annotators"
        )
    if not report["pairs"]:
        raise ValueError(
            f"{annotations}: {len(report['annotators'])} annotators, but no image annotated by two of them yet "
            "(overlap tasks give agreement)"
        )
    echo(format_agreement(report))
    if report["ground_truth"]["not_annotated"]:
        echo(f"{report['ground_truth']['not_annotated']} records not annotated yet were left out")
    for what, n in report["left_out"].items():
        if n:
            echo(f"left out: {n} {what.replace('_', ' ')}")


def run_status(cfg: AnnotateConfig, since: str | None, from_export: Path | None, out: Path | None) -> None:
    """Where the work stands, and per annotator: submitted, skip rate, tasks per active hour (sessions split at
    20-minute pauses), median lead time, boxes per image, share of clean verdicts, and agreement with the others
    on overlap tasks (box F1 at IoU 0.5, importance gap). --since limits the annotator table to recent work.
    With gold tasks (sdg annotate gold add): each annotator's SDG-Eval against them, with 95% intervals, and the
    annotators whose score is under gold_min_score after gold_min_tasks gold tasks FLAGGED."""
    from annotation.status import format_status, status

    s = status(None if from_export is not None else _conn(cfg), cfg, since, from_export)
    if out is not None:
        from sdg_data.io.files import write_json

        write_json(out, s)
    echo(format_status(s))


def run_disagreements(cfg: AnnotateConfig, out: Path, top: int, from_export: Path | None) -> None:
    """The overlap tasks where annotators disagree most, to review first: 1 - mean pairwise box F1 (a clean
    verdict against boxes is full disagreement), then the importance gap. OUT has every overlap image with its
    annotators, box counts and the link that opens the task."""
    from annotation.status import disagreement_list, format_disagreements

    s = disagreement_list(None if from_export is not None else _conn(cfg), cfg, out, top, from_export)
    echo(format_disagreements(s, out))


def run_backup(cfg: AnnotateConfig, out: Path) -> None:
    """Back up the server's database while it runs: pg_dump -Fc for PostgreSQL (POSTGRE_* variables), SQLite's
    online backup for data_dir/label_studio.sqlite3. Pair it with a dated 'sdg annotate pull' (our own records)."""
    from annotation.postgres import backup

    s = backup(cfg.database, cfg.data_dir, out)
    echo(f"backed up {cfg.database} to {s['out']} ({s['bytes'] / 1e6:.1f} MB, {s['seconds']:.1f} s)")


def run_restore(cfg: AnnotateConfig, dump: Path) -> None:
    """Restore a backup into a new, empty database (the server stopped): POSTGRE_NAME for PostgreSQL (create it
    first, e.g. createdb), a new data_dir for SQLite. Then start 'sdg annotate serve' on it and pull to check."""
    from annotation.postgres import restore

    s = restore(cfg.database, cfg.data_dir, dump)
    echo(f"restored {s['from']} into {cfg.database} ({s['seconds']:.1f} s); start the server on it")


def run_judge_init(cfg: AnnotateConfig) -> None:
    """Create or update the blind A/B project (two images in a random order, the caption, Left / Same / Right,
    an optional comment; guidelines in annotation/judge_guidelines.md); idempotent."""
    from annotation.judge import ensure_judge_project

    project, created = ensure_judge_project(_conn(cfg))
    echo(f"{'created' if created else 'updated'} judging project {project.id}: {cfg.judge_title!r}")


def run_judge_push(cfg: AnnotateConfig, a: Path, b: Path, a_name: str | None, b_name: str | None) -> None:
    """A task per pair of images of the same source: two sdg refine manifests (e.g. boxes+text against
    caption-only), or a manifest and the records of its sources. Each pair's left / right order is random and kept
    out of the annotators' view; a second push creates nothing.

    Usage: sdg annotate judge-push --a refined_sdg/refined.jsonl \\
               --b refined_fixed/refined.jsonl
    """
    from annotation.judge import judge_push

    s = judge_push(_conn(cfg), a, b, a.parent, a_name, b_name)
    echo(f"{s['kept']} pairs ({s['a_method']} vs {s['b_method']}): created {s['created']}, "
               f"rejected {s['rejected']}; project {s['project']}")  # fmt: skip


def run_judge_pull(cfg: AnnotateConfig, out: Path, from_export: Path | None) -> None:
    """Un-blind the judgments with each pair's recorded order: OUT has a line per judgment (good / same / bad for
    method A against B), OUT.tally.json the shares with 95% intervals and the annotators' agreement; tasks and
    annotations that cannot be read go to OUT-STEM.judge.rejects.jsonl with OUT-STEM.judge.summary.json."""
    from annotation.judge import format_tally, judge_pull

    s = judge_pull(None if from_export is not None else _conn(cfg), out, from_export)
    echo(format_tally(s["tally"]))
    rejects = out.with_name(f"{out.stem}.judge.rejects.jsonl")
    echo(f"{s['judgments']} judgments, {s['rejected']} rejected -> {out}, {out.with_suffix('.tally.json')}"
         + (f" (rejects: {rejects})" if s["rejected"] else ""))  # fmt: skip


def register(root: typer.Typer) -> None:
    app = typer.Typer(help=HELP, no_args_is_help=True)
    config_command(app, "serve", AnnotateConfig, run_serve, exclude=_but(SERVE), extra="annotate")
    config_command(app, "stop", AnnotateConfig, run_stop, exclude=_but(("data_dir",)), extra="annotate")
    config_command(app, "init", AnnotateConfig, run_init, exclude=_own("init"), extra="annotate")
    samples = arg("samples", Path, "Records JSONL (sdg generate's manifest.jsonl) or a dataset folder (sdg build).")
    order = opt(
        "order", Optional[Path], "--order",
        "sdg detect --samples K predictions (or JSONL with image_id and uncertainty): most uncertain first.", None,
    )  # fmt: skip
    config_command(app, "push", AnnotateConfig, run_push, [samples, order], exclude=_own("push"), extra="annotate")
    gold_app = typer.Typer(help="Gold (reference-annotated) tasks mixed through every annotator's queue.",
                           no_args_is_help=True)  # fmt: skip
    gold_records = arg("records", Path, "Annotated records JSONL: the reference boxes of each gold image.")
    config_command(gold_app, "add", AnnotateConfig, run_gold_add, [gold_records], exclude=_own("gold-add"),
                   extra="annotate")  # fmt: skip
    app.add_typer(gold_app, name="gold")
    escalate_params = [
        opt("out", Path, "--out", "Every compared task with its agreement and the decision (JSONL).",
            Path("outputs/annotate/escalated.jsonl")),
        opt("dry_run", bool, "--dry-run", "Say what would be escalated; change nothing on the server.", False),
    ]  # fmt: skip
    config_command(app, "escalate", AnnotateConfig, run_escalate, escalate_params, exclude=_own("escalate"),
                   extra="annotate")  # fmt: skip
    predictions = arg("predictions", Path, "Detector output JSONL: raw 'response' text or 'defects'.")
    version = opt("model_version", str, "--model-version", "Name annotators see on the boxes.")
    config_command(
        app, "predict", AnnotateConfig, run_predict, [predictions, version], exclude=_own("predict"), extra="annotate"
    )
    pull_params = [
        opt("out", Path, "--out", "Records JSONL, one per image (plus .all, .pull.rejects, .pull.summary)."),
        opt("since", Optional[str], "--since", "Only tasks updated after this ISO time (UTC).", None),
        opt(
            "from_export",
            Optional[Path],
            "--from-export",
            "A JSON export downloaded from the UI, not the server.",
            None,
        ),
        opt("only_reviewed", bool, "--only-reviewed", "Only images a reviewer annotated (the review pass).", False),
    ]
    config_command(app, "pull", AnnotateConfig, run_pull, pull_params, exclude=_own("pull"), extra="annotate")
    app.command("agreement")(guarded(agreement_cmd, "annotate"))
    export_opt = opt("from_export", Optional[Path], "--from-export", "A JSON export from the UI (offline).", None)
    status_params = [
        opt("since", Optional[str], "--since", "Annotator table over work created after this ISO time.", None),
        export_opt,
        opt("out", Optional[Path], "--out", "Also write the figures as JSON.", None),
    ]
    config_command(app, "status", AnnotateConfig, run_status, status_params, exclude=_own("status"), extra="annotate")
    disputes = [
        opt("out", Path, "--out", "Every overlap image, most disputed first (JSONL)."),
        opt("top", int, "--top", "How many to print.", 20),
        export_opt,
    ]
    config_command(
        app,
        "disagreements",
        AnnotateConfig,
        run_disagreements,
        disputes,
        exclude=_own("disagreements"),
        extra="annotate",
    )
    db_only = _but(("data_dir", "database"))
    backup_out = [opt("out", Path, "--out", "The backup file (e.g. backups/ls-2026-11-30.dump).")]
    config_command(app, "backup", AnnotateConfig, run_backup, backup_out, exclude=db_only, extra="annotate")
    restore_from = [opt("dump", Path, "--from", "A file written by sdg annotate backup.")]
    config_command(app, "restore", AnnotateConfig, run_restore, restore_from, exclude=db_only, extra="annotate")
    config_command(app, "judge-init", AnnotateConfig, run_judge_init, exclude=_own("judge-init"), extra="annotate")
    judge = [
        opt("a", Path, "--a", "Method A: an sdg refine manifest (refined.jsonl), the method under test."),
        opt("b", Path, "--b", "Method B: another refine manifest, or the records of the source images."),
        opt("a_name", Optional[str], "--a-name", "Method A's name (default: its refine mode or file name).", None),
        opt("b_name", Optional[str], "--b-name", "Method B's name.", None),
    ]
    config_command(
        app, "judge-push", AnnotateConfig, run_judge_push, judge, exclude=_own("judge-push"), extra="annotate"
    )
    judged = [
        opt("out", Path, "--out", "A line per judgment (JSONL); the tally beside it (.tally.json)."),
        opt("from_export", Optional[Path], "--from-export", "A JSON export downloaded from the UI (offline).", None),
    ]
    config_command(
        app, "judge-pull", AnnotateConfig, run_judge_pull, judged, exclude=_own("judge-pull"), extra="annotate"
    )
    root.add_typer(app, name="annotate")
