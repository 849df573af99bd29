"""``sdg annotate`` settings: the server, the project and how its annotations become records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from sdg_data.config import Bounds, Count, NonNegative, Positive, Seconds


@dataclass
class AnnotateConfig:
    url: str = "http://127.0.0.1:8089"  # the server; unset: $SDG_LABEL_STUDIO_URL, else serve's state file
    token_env: str = "LABEL_STUDIO_API_KEY"  # the variable holding the API token (never logged or written)
    timeout_s: Seconds = 600.0  # per request; imports and exports of 30K tasks take minutes
    max_retries: Count = 5  # connection failures and 5xx, with exponential backoff
    backoff_base_s: NonNegative = 0.5  # first retry wait (doubles)
    backoff_max_s: NonNegative = 20.0  # longest retry wait
    project_title: str = "SDG defect grounding"  # the project's title (with a tag in its description)
    image_root: str | None = field(
        default=None,
        metadata={
            "help": "The folder images are served from: given to serve (default: the current folder); the other "
            "commands read it from the running server or the project's storage unless given."
        },
    )
    overlap: Positive | None = None  # annotators per task (maximum_annotations); unset: keep the project's (1 if new)
    guidelines: str | None = None  # a markdown file; default annotation/guidelines.md
    chunk_size: Positive = 2000  # tasks or predictions per import request
    work_dir: str = "outputs/annotate"  # push and predict write their rejects and summary here (not beside the input)
    consolidation: Literal["primary", "review"] = "primary"  # how pull picks the one record of an image
    primary_annotators: list[str] = field(default_factory=list)  # emails in priority order; default: earliest
    reviewers: list[str] = field(default_factory=list)  # for "review": their annotation wins when there is one
    check_image_size: bool = True  # compare the exported original size with the image file when it is readable
    judge_title: str = "SDG blind A/B"  # judge-*: the blind pairwise project's title
    judge_seed: Count = 0  # judge-push: seeds each pair's random left / right order (with the pair's id)
    host: str = "127.0.0.1"  # serve: the address to bind
    port: Annotated[int, Bounds(ge=1, le=65535)] = 8089  # serve: the port
    data_dir: str = "outputs/label-studio"  # serve: LABEL_STUDIO_BASE_DATA_DIR, the SQLite database and media
    database: Literal["sqlite", "postgresql"] = "sqlite"  # postgresql reads POSTGRE_HOST/PORT/NAME/USER/PASSWORD
    label_studio_bin: str = ".venv-ls/bin/label-studio"  # its own environment; or $SDG_LABEL_STUDIO_BIN

    def __post_init__(self) -> None:
        if (self.overlap is not None and self.overlap < 1) or self.chunk_size < 1 or self.max_retries < 0:
            raise ValueError("AnnotateConfig: overlap and chunk_size must be >= 1, max_retries >= 0")
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

    from annotation.server import read_state

    state = read_state(cfg)
    if not url_given and cfg.url == AnnotateConfig.url:
        env_url = os.environ.get(URL_ENV)
        if env_url:
            cfg.url = env_url.rstrip("/")
            state = None  # another server: its image root is not this state's
        elif state and state.get("url"):
            cfg.url = str(state["url"])
    elif state and str(state.get("url", "")).rstrip("/") != cfg.url.rstrip("/"):
        state = None
    if cfg.image_root is None and state and state.get("image_root"):
        cfg.image_root = str(state["image_root"])
    if cfg.label_studio_bin == AnnotateConfig.label_studio_bin and os.environ.get(BIN_ENV):
        cfg.label_studio_bin = os.environ[BIN_ENV]
    return cfg
