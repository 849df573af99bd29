"""``sdg annotate`` settings: the server, the project and how its annotations become records."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from sdg_data.config import Bounds, Count, Draws, Fraction, NonNegative, Positive, Seconds


@dataclass
class AnnotateConfig:
    RECIPE_KIND = "annotate"  # bundled recipes of this kind are found by name (sdg recipes)

    url: str = field(
        default="http://127.0.0.1:8089",
        metadata={"help": "the server; unset: $SDG_LABEL_STUDIO_URL, else serve's state file"},
    )
    token_env: str = field(
        default="LABEL_STUDIO_API_KEY",
        metadata={"help": "the variable holding the API token (never logged or written)"},
    )
    timeout_s: Seconds = field(
        default=600.0, metadata={"help": "per request; imports and exports of 30K tasks take minutes"}
    )
    max_retries: Count = field(default=5, metadata={"help": "connection failures and 5xx, with exponential backoff"})
    backoff_base_s: NonNegative = field(default=0.5, metadata={"help": "first retry wait (doubles)"})
    backoff_max_s: NonNegative = field(default=20.0, metadata={"help": "longest retry wait"})
    project_title: str = field(
        default="SDG defect grounding", metadata={"help": "the project's title (with a tag in its description)"}
    )
    image_root: str | None = field(
        default=None,
        metadata={
            "help": "The folder images are served from: given to serve (default: the current folder); the other "
            "commands read it from the running server or the project's storage unless given."
        },
    )
    overlap: Positive | None = field(
        default=None,
        metadata={"help": "annotators per task (maximum_annotations); unset: keep the project's (1 if new)"},
    )
    guidelines: str | None = field(
        default=None, metadata={"help": "a markdown file; default annotation/guidelines.md"}
    )
    side_panels: bool = field(
        default=False,
        metadata={
            "help": "init: keep Label Studio's side panels (region list, details, history) beside the image; off, "
            "their 320 px go to the image (a box is selected on the image and deleted with Backspace)"
        },
    )
    chunk_size: Positive = field(default=2000, metadata={"help": "tasks or predictions per import request"})
    work_dir: str = field(
        default="outputs/annotate",
        metadata={
            "help": "push, predict and gold add write their rejects and summary here (not beside the input); the "
            "gold store and the queue's priorities live under it"
        },
    )
    consolidation: Literal["primary", "review", "consensus"] = field(
        default="primary",
        metadata={
            "help": "how pull makes the one record of an image: primary (the primary annotators', else the earliest "
            "annotation), review (the latest review), consensus (boxes a quorum of its annotators drew, merged)"
        },
    )
    consensus_iou: Annotated[float, Bounds(gt=0, le=1)] = field(
        default=0.5, metadata={"help": "consensus: boxes of one label at this IoU or more are the same defect"}
    )
    consensus_quorum: Positive | None = field(
        default=None,
        metadata={"help": "consensus: annotators a box needs; unset: a majority of the image's annotators"},
    )
    consensus_weights: bool = field(
        default=False,
        metadata={"help": "consensus: weigh each annotator's vote by their gold score (see gold_min_tasks)"},
    )
    embedder: str = field(
        default="lexical",
        metadata={
            "help": "description similarity in gold scores and consensus, with sdg eval's embedders: lexical "
            "(offline), a model id or folder (Qwen/Qwen3-Embedding-0.6B: sdg eval's default), none to skip"
        },
    )
    gold_file: str | None = field(
        default=None,
        metadata={"help": "the gold store (reference records, kept here, never on the server); unset: "
                  "WORK_DIR/gold/<project title>.jsonl"},
    )  # fmt: skip
    gold_share: Annotated[float, Bounds(gt=0, lt=1)] = field(
        default=0.05, metadata={"help": "the share of each annotator's tasks that are gold"}
    )
    gold_min_tasks: Positive = field(
        default=10, metadata={"help": "gold tasks an annotator does before their score can flag them or weigh"}
    )
    gold_min_score: Fraction = field(
        default=0.3, metadata={"help": "flag an annotator whose gold score (mean BoxF1@0.5 over labels) is below"}
    )
    gold_bootstrap: Draws = field(default=1000, metadata={"help": "resamples for the gold scores' 95% intervals"})
    team_size: Positive | None = field(
        default=None, metadata={"help": "annotators sharing the queue; unset: the server's accounts but yours"}
    )
    escalate_below: Fraction = field(
        default=0.5, metadata={"help": "escalate: a task whose annotators' mean box F1 is below gets one more"}
    )
    escalate_max: Positive = field(default=4, metadata={"help": "escalate: most annotators a task gets"})
    primary_annotators: list[str] = field(
        default_factory=list, metadata={"help": "emails in priority order; default: earliest"}
    )
    reviewers: list[str] = field(
        default_factory=list, metadata={"help": 'for "review": their annotation wins when there is one'}
    )
    check_image_size: bool = field(
        default=True, metadata={"help": "compare the exported original size with the image file when it is readable"}
    )
    judge_title: str = field(default="SDG blind A/B", metadata={"help": "judge-*: the blind pairwise project's title"})
    judge_seed: Count = field(
        default=0, metadata={"help": "judge-push: seeds each pair's random left / right order (with the pair's id)"}
    )
    host: str = field(default="127.0.0.1", metadata={"help": "serve: the address to bind"})
    port: Annotated[int, Bounds(ge=1, le=65535)] = field(default=8089, metadata={"help": "serve: the port"})
    data_dir: str = field(
        default="outputs/label-studio",
        metadata={"help": "serve: LABEL_STUDIO_BASE_DATA_DIR, the SQLite database and media"},
    )
    database: Literal["sqlite", "postgresql"] = field(
        default="sqlite", metadata={"help": "postgresql reads POSTGRE_HOST/PORT/NAME/USER/PASSWORD"}
    )
    label_studio_bin: str | None = field(
        default=None,
        metadata={
            "help": "the label-studio program; unset: $SDG_LABEL_STUDIO_BIN, else the installation's .venv-ls (make "
            "install), one beside this Python, or the per-user one (installed there once, on first use)"
        },
    )

    def __post_init__(self) -> None:
        if (self.overlap is not None and self.overlap < 1) or self.chunk_size < 1 or self.max_retries < 0:
            raise ValueError("AnnotateConfig: overlap and chunk_size must be >= 1, max_retries >= 0")
        if self.consolidation != "consensus" and (self.consensus_weights or self.consensus_quorum):
            raise ValueError("AnnotateConfig: consensus_quorum and consensus_weights need consolidation 'consensus'")
        if self.consolidation == "review" and not self.reviewers:
            raise ValueError("AnnotateConfig: consolidation 'review' needs the reviewers' emails in 'reviewers'")


URL_ENV = "SDG_LABEL_STUDIO_URL"
BIN_ENV = "SDG_LABEL_STUDIO_BIN"


def resolve_server(cfg: AnnotateConfig, url_given: bool) -> AnnotateConfig:
    """One answer to "which server?" for every annotate command, in this order: ``--url`` or the recipe's ``url``;
    ``$SDG_LABEL_STUDIO_URL``; the state file ``sdg annotate serve`` writes in its data folder (so ``serve --port
    9000`` is found without repeating the port); the default. The image root, when not given, is the one that
    server was started with (the state file), else the project's storage (see ``client.project_image_root``).
    The binary: ``$SDG_LABEL_STUDIO_BIN`` unless the
    recipe or flag names one."""
    import os

    state = read_state(cfg)
    looked = [f"{state_path(cfg)} (serve's state in --data-dir)"]
    if state is None and not url_given and cfg.data_dir == AnnotateConfig.data_dir:
        state = read_last_server()  # serve --data-dir X elsewhere: the last server this user started
        looked.append(f"{last_server_path()} (the last server sdg annotate serve started)")
    cfg.found_by = "the --url flag or the recipe"
    if not url_given and cfg.url == AnnotateConfig.url:
        env_url = os.environ.get(URL_ENV)
        if env_url:
            cfg.url = env_url.rstrip("/")
            cfg.found_by = f"${URL_ENV}"
            state = None  # another server: its image root is not this state's
        elif state and state.get("url"):
            cfg.url = str(state["url"])
            cfg.found_by = f"the running server's state ({state.get('state_file', state_path(cfg))})"
        else:
            cfg.found_by = f"the default (no running server found in {', '.join(looked)}; no ${URL_ENV})"
    elif state and str(state.get("url", "")).rstrip("/") != cfg.url.rstrip("/"):
        state = None
    if cfg.image_root is None and state and state.get("image_root"):
        cfg.image_root = str(state["image_root"])
    if cfg.label_studio_bin is None and os.environ.get(BIN_ENV):
        cfg.label_studio_bin = os.environ[BIN_ENV]
    return cfg


# ------------------------------------------------------------------ the running server's state file
STATE_FILE = "server.json"


def state_path(cfg: AnnotateConfig) -> Path:
    """Where ``sdg annotate serve`` records the running server (pid, URL) in its data folder."""
    return Path(cfg.data_dir) / STATE_FILE


def read_state(cfg: AnnotateConfig) -> dict | None:
    """The running server's state, or None when there is none (or its process is gone)."""
    return _live_state(state_path(cfg))


def _live_state(path: Path) -> dict | None:
    from sdg_data.io.sidecar import read_json_object

    state = read_json_object(path)
    try:
        pid = int(state["pid"])  # type: ignore[index]
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state


def last_server_path() -> Path:
    """Where ``sdg annotate serve`` records the last server this user started (any data folder, any working
    folder), so a plain ``sdg annotate init`` finds it: ``$XDG_STATE_HOME/sdg/label-studio.json``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "sdg" / "label-studio.json"


def read_last_server() -> dict | None:
    """The last server this user started, while its process lives; None otherwise."""
    try:
        state = _live_state(last_server_path())
    except RuntimeError:  # no home folder
        return None
    if state is not None:
        state["state_file"] = str(last_server_path())
    return state
