"""The ``sdg`` command: it only mounts the stages' commands and draws the last error boundary.

The core's own commands live with their roles: :mod:`sdg_data.scoring.cli` (eval, reward, compare,
eval-image-level), :mod:`sdg_data.dataset.cli` (build, stats, viz, validate), :mod:`sdg_data.interop.cli` (import,
export) and :mod:`sdg_data.generate.cli`. Stages built on the core
(distill, annotate, train and detect) register theirs through the ``sdg.commands`` entry points that
``pyproject.toml`` declares, so the core never imports them. Heavy libraries load inside the commands, so
``sdg --help`` starts fast.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import entry_points
from typing import Annotated

import typer
import typer.main

from sdg_data.dataset import cli as dataset_cli
from sdg_data.generate import cli as generate_cli
from sdg_data.interop import cli as interop_cli
from sdg_data.io.cli_kit import one_line, tidy
from sdg_data.scoring import cli as scoring_cli


HELP = (
    "Structured Defect Grounding toolkit: build SDG datasets for text-to-image models and score detectors.\n\n"
    "A defect is a box on the 0-1000 grid (xyxy), a label (artifact | misalignment), a description and an "
    "importance 1-100. Records travel between stages as JSONL lines "
    '{"image_id": ..., "defects": [{"box_2d": \\[x0, y0, x1, y1], "label": ..., "description": ..., '
    '"importance": ...}]}. Every setting of a command is a flag and a key of its --config recipe.'
)
ENTRY_POINT_GROUP = "sdg.commands"


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"sdg {version('sdg')}")
        raise typer.Exit()


def make_app() -> typer.Typer:
    app = typer.Typer(
        name="sdg", help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
    )

    @app.callback()
    def root(
        version: Annotated[  # noqa: ARG001 - handled by its callback
            bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
        ] = False,
    ) -> None:
        pass

    for module in (scoring_cli, dataset_cli, interop_cli, generate_cli):
        module.register(app)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            register = ep.load()
        except ImportError:  # that stage's extra is not installed: its commands are simply absent
            continue
        register(app)
    return app


app = make_app()


def main() -> None:
    """The ``sdg`` entry point: any error a command did not turn into its own line still ends as one red line
    (with SDG_DEBUG=1 it raises, for the traceback)."""
    from sdg_data.io.secrets import install_log_filter

    install_log_filter()
    try:
        tidy(typer.main.get_command(app))(prog_name="sdg")
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.RED, err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001  the last boundary: never a traceback for a user
        if os.environ.get("SDG_DEBUG"):
            raise
        typer.secho(
            f"error: {one_line(exc)} ({type(exc).__name__}; set SDG_DEBUG=1 for the traceback)",
            fg=typer.colors.RED,
            err=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
