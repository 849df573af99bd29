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
import typer.core
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
# sdg --help lists the commands in the order a dataset's life runs through them; any other command follows
PIPELINE = ("generate", "annotate", "distill", "build", "stats", "viz", "validate", "train", "detect", "eval",
            "reward", "compare", "eval-image-level", "eval-lora", "refine", "import", "export", "recipes")  # fmt: skip


class PipelineGroup(typer.core.TyperGroup):
    """The top-level command group, listed in pipeline order (click sorts by name)."""

    def list_commands(self, ctx):  # noqa: ARG002 - click's signature
        names = list(self.commands)
        return sorted(names, key=lambda n: (PIPELINE.index(n) if n in PIPELINE else len(PIPELINE), names.index(n)))


def recipes_app() -> typer.Typer:
    """``sdg recipes`` (the bundled recipes and launch files, a line each) and ``sdg recipes show NAME``."""
    recipes = typer.Typer(help="The bundled recipes and launch files: sdg recipes; sdg recipes show NAME",
                          invoke_without_command=True)  # fmt: skip

    @recipes.callback()
    def listing(ctx: typer.Context) -> None:
        """List every bundled recipe and launch file with what it is for; any of them is a --config NAME (or
        --accelerate-config NAME) from any folder."""
        if ctx.invoked_subcommand is not None:
            return
        import shutil
        import textwrap

        from sdg_data.io.bundled import FOLDERS, bundled
        from sdg_data.io.cli_kit import echo

        width = max(60, min(120, shutil.get_terminal_size((100, 20)).columns))
        found = bundled()
        names = [b.name for b in found]
        for kind, _, used in FOLDERS:
            mine = [b for b in found if b.kind == kind]
            if not mine:
                continue
            echo(f"{kind}: {used}")
            for b in mine:
                echo(f"  {b.name if names.count(b.name) == 1 else b.qualified}")
                for line in textwrap.wrap(b.summary(), width - 6):
                    echo(f"      {line}")
        echo("sdg recipes show NAME prints one, to start your own from (save it, edit it, pass its path).")

    @recipes.command("show")
    def show(name: Annotated[str, typer.Argument(help="A bundled recipe's name, as sdg recipes lists it.")]) -> None:
        """Print a bundled recipe or launch file, to start your own from."""
        from sdg_data.io.bundled import RecipeError, find
        from sdg_data.io.cli_kit import fail

        try:
            b = find(name)
        except RecipeError as exc:
            raise fail(exc) from None
        typer.echo(b.path.read_text(encoding="utf-8"), nl=False)

    return recipes


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"sdg {version('sdg')}")
        raise typer.Exit()


def make_app() -> typer.Typer:
    app = typer.Typer(
        name="sdg", help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
        cls=PipelineGroup,
    )  # fmt: skip

    @app.callback()
    def root(
        version: Annotated[  # noqa: ARG001 - handled by its callback
            bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
        ] = False,
    ) -> None:
        pass

    for module in (scoring_cli, dataset_cli, interop_cli, generate_cli):
        module.register(app)
    seen: set[str] = set()
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in seen:  # two installs of sdg on the path (a checkout and a wheel): the first one found
            continue
        seen.add(ep.name)
        try:
            register = ep.load()
        except ImportError:  # that stage's extra is not installed: its commands are simply absent
            continue
        register(app)
    app.add_typer(recipes_app(), name="recipes")
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
