"""What every stage's commands share: options made from a config dataclass, and one error boundary.

A setting is declared once, as a field of its stage's config dataclass with a comment (or an attribute
docstring) that says what it does. :func:`config_command` turns every such field into a flag with that help, and
``--config RECIPE.yaml`` loads the same fields from YAML (unknown keys fail); flags override the recipe. So
recipes, flags and ``--help`` agree by construction. Field metadata can rename a flag (``{"flag": "--x"}``) or keep
a field out of the command line (``{"cli": False}``: recipe only, e.g. mappings).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import typer


# ------------------------------------------------------------------ what reaches the terminal
# C0 controls but tab and newline, DEL, C1 controls and the bidirectional overrides: text from a server or a file
# (an annotator's name, a reason quoting a record) could otherwise move the cursor, retitle the terminal or reorder
# what the user reads. They are shown as escapes.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``), so printing it is inert."""
    return _CONTROL.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}", text
    )


def echo(message: Any = "", err: bool = False, nl: bool = True) -> None:
    """Print a line of a command's output; text from records and servers goes through :func:`printable`."""
    typer.echo(printable(str(message)), err=err, nl=nl)


# ------------------------------------------------------------------ one help style
_REST = re.compile(r":(?:func|class|mod|meth|attr):`~?([^`]+)`|``([^`]+)``")


def plain(text: str | None) -> str | None:
    """Help text without reST markup (docstrings double as help): ``x`` and :func:`x` read as x."""
    return None if text is None else _REST.sub(lambda m: (m.group(1) or m.group(2)).split(".")[-1] if m.group(1)
                                               else m.group(2), text)  # fmt: skip


def _one_line_summary(text: str | None) -> str | None:
    """The first paragraph (the command list's summary) as one line; each later prose paragraph as one line too
    (the terminal wraps it evenly), while examples (a paragraph with an indented line, or one starting with
    ``Usage:``) keep their lines as written."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    out = [" ".join(paragraphs[0].split())]
    for para in paragraphs[1:]:
        lines = para.splitlines()
        example = para.lstrip().startswith(("Usage:", "Served:")) or any(line.startswith(" ") for line in lines[1:])
        out.append("\b\n" + para if example else " ".join(para.split()))  # \b: click keeps the lines as written
    return "\n\n".join(out)


def _kind(annotation: Any) -> str:
    if typing.get_origin(annotation) is list:
        return _kind((typing.get_args(annotation) or (str,))[0])
    return {int: "INT", float: "NUMBER", str: "TEXT", Path: "PATH", bool: ""}.get(annotation, "TEXT")


def tidy(command: Any) -> Any:
    """One placeholder style over every command and group under ``command`` (the click command typer builds):
    arguments by their name (SAMPLES), values by their kind (INT, NUMBER, TEXT, PATH, or the choices), flags and
    --help without one; help text without reST markup. Returns ``command``."""
    from typer.core import TyperArgument

    stack = [command]
    while stack:
        cmd = stack.pop()
        cmd.rich_markup_mode = None  # click's own help: wrapped to the terminal, never an option or URL cut short
        cmd.help = _one_line_summary(plain(cmd.help))
        stack.extend(getattr(cmd, "commands", {}).values())
        helper = cmd.get_help_option(cmd.context_class(cmd))
        for p in [*cmd.params, *([helper] if helper is not None else [])]:
            p.help = plain(getattr(p, "help", None))
            desc = getattr(p, "type_descriptor", None)
            if isinstance(p, TyperArgument):  # SAMPLES in the usage line and the table, no type column
                p.metavar = name = p.name.upper()
                p._usage_display_name = (lambda n: lambda: n)(name if p.required else f"[{name}]")
                p.display_type_rich = lambda ctx: None
            elif getattr(p, "is_flag", False) or p.name == "help" or desc is None:
                p.metavar = ""
            elif desc.is_choice:
                p.metavar = "|".join(map(str, desc.choices or ()))
            else:
                p.metavar = _kind(desc.annotation)
    return command


# ------------------------------------------------------------------ the error boundary
def one_line(exc: BaseException) -> str:
    """An exception as one redacted, printable line (keys masked, newlines folded, long server bodies cut)."""
    from sdg_data.io.secrets import redact

    text = printable(redact(" ".join(str(exc).split()) or type(exc).__name__))
    return text if len(text) <= 2000 else text[:2000] + " ..."


def fail(exc: BaseException, code: int = 2) -> typer.Exit:
    """Print ``error: ...`` in red on stderr and return the Exit to raise."""
    typer.secho(f"error: {one_line(exc)}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=code)


def guarded(fn: Callable[..., Any], extra: str | None = None) -> Callable[..., Any]:
    """Run a command body so that the toolkit's errors end as one red line and exit code 2.

    ValueError covers bad input, records, configs, images and paths; OSError files and connections; RuntimeError
    servers that refuse (a key, a token) or give up. A missing optional dependency names the extra to install."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except ImportError as exc:
            hint = f"; install the {extra} extra: pip install 'sdg[{extra}]'" if extra else ""
            raise fail(ImportError(f"{exc}{hint}")) from None
        except (ValueError, OSError, RuntimeError) as exc:
            raise fail(exc) from None

    return run


# ------------------------------------------------------------------ options from a config dataclass
@functools.cache
def field_help(cls: type) -> dict[str, str]:
    """Each field's help: its ``metadata["help"]``, the one convention (trl's, so ``sdg train`` and every other
    command read the same words)."""
    return {f.name: f.metadata["help"] for f in dataclasses.fields(cls) if f.metadata.get("help")}


def _cli_type(hint: Any) -> Any | None:
    """The type typer parses for a config field, or None when the field is recipe-only (mappings)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _cli_type(args[0]) if len(args) == 1 else None
    if origin is typing.Literal:
        return str  # checked against the literal by load_config, which names the choices
    if origin is list:
        (item,) = typing.get_args(hint) or (str,)
        return list[item] if item in (str, int, float) else None
    if hint in (bool, int, float, str):
        return hint
    return None


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return ""
    if isinstance(value, float):
        value = f"{value:.6g}"
    if value is None or value == []:  # square brackets, as click marks [required]: one style for the help's notes
        return "  [default: unset]" if value is None else "  [default: none]"
    return f"  [default: {value}]"


def config_options(cls: type, exclude: Sequence[str] = ()) -> list[inspect.Parameter]:
    """One keyword parameter per field of ``cls``, each a typer option whose default None means "not given"."""
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    params = []
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.metadata.get("cli", True):
            continue
        t = _cli_type(hints[f.name])
        if t is None:
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        decls = [flag if "/" in flag else f"{flag}/--no-{flag[2:]}"] if t is bool else [flag]
        if t is str and typing.get_origin(typing.get_type_hints(cls)[f.name]) is typing.Literal:
            choices = " | ".join(map(str, typing.get_args(hints[f.name])))
            text = f"{helps.get(f.name, '')} ({choices})"
        else:
            text = helps.get(f.name, "")
        extra: dict[str, Any] = {}
        if typing.get_origin(t) is list:  # a list field: one value per use of the flag
            extra["metavar"] = "VALUE"
            text = text if "repeatable" in text.lower() else f"{text} (repeatable)"
        said = re.search(r"\b(default|unset)\b", text, re.IGNORECASE)  # the help says it: once, not twice
        opt = typer.Option(
            *decls, help=(text + ("" if said else _default_text(f))).strip(), show_default=False, **extra
        )
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[t], opt]
            )
        )
    return params


ConfigOpt = Annotated[
    Optional[str],
    typer.Option(
        "--config",
        help="A recipe of these settings: a YAML file, or a bundled recipe's name (sdg recipes lists them); flags "
        "given here override it.",
    ),
]


def param(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    """A command parameter that is not a config setting (an input file, an output folder)."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def arg(name: str, type_: Any, help: str) -> inspect.Parameter:
    """A required positional argument."""
    return param(name, Annotated[type_, typer.Argument(help=help)])


def opt(name: str, type_: Any, flag: str, help: str, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    """An option that is not a config setting; required unless ``default`` is given."""
    return param(name, Annotated[type_, typer.Option(flag, help=help)], default)


def out_option(help: str) -> inspect.Parameter:
    """The required ``--out`` of a command that writes files."""
    return opt("out", Path, "--out", help)


def config_command(
    app: typer.Typer,
    name: str,
    cfg_cls: type,
    run: Callable[..., Any],
    params: Sequence[inspect.Parameter] = (),
    help: str | None = None,
    exclude: Sequence[str] = (),
    extra: str | None = None,
    hidden: bool = False,
) -> None:
    """Add command ``name``: its own ``params`` (files, folders), then one option per field of ``cfg_cls``, then
    ``--config``. The body builds the config (recipe, then flags) and calls ``run(cfg, **params)`` inside the
    error boundary."""
    from sdg_data.config import load_config

    opts = config_options(cfg_cls, exclude)
    own = {p.name for p in params}

    kinds = (getattr(cfg_cls, "RECIPE_KIND", None) or "core",)

    def command(**kwargs: Any) -> Any:
        from sdg_data.io.bundled import resolve

        recipe = kwargs.pop("config", None)
        mine = {k: kwargs.pop(k) for k in list(kwargs) if k in own}
        cfg = load_config(cfg_cls, resolve(recipe, kinds) if recipe else None, kwargs)
        return run(cfg, **mine)

    recipe = inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ConfigOpt)
    command.__signature__ = inspect.Signature([*params, *opts, recipe])  # type: ignore[attr-defined]
    command.__doc__ = help or run.__doc__
    app.command(name, hidden=hidden)(guarded(command, extra))
