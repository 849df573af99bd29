"""The house rules that keep the code changeable: the core imports no stage, settings are declared once, the
docs/files.md's file tree is the tree, and the command line is built from the configs."""

import ast
import dataclasses
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sdg_data.cli import app
from sdg_data.io.cli_kit import config_options, field_help


ROOT = Path(__file__).resolve().parents[1]
STAGES = ("annotation", "distill", "train")


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_the_core_imports_no_stage():
    bad = {}
    for path in sorted((ROOT / "sdg_data").rglob("*.py")):
        hits = sorted(m for m in _imports(path) if m.split(".")[0] in STAGES)
        if hits:
            bad[str(path.relative_to(ROOT))] = hits
    assert not bad, f"the core imports stages: {bad}"


def test_stages_register_their_commands_through_entry_points():
    text = (ROOT / "pyproject.toml").read_text()
    for stage, module in (("annotate", "annotation"), ("distill", "distill"), ("train", "train")):
        assert re.search(rf'^{stage} = "{module}\.cli:register"$', text, re.M)
    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    assert {"eval", "reward", "validate", "import-sdg30k", "build", "stats", "viz", "generate", "distill",
            "detect", "annotate", "train"} <= names  # fmt: skip


def _config_classes():
    from annotation.config import AnnotateConfig
    from distill.config import DistillConfig
    from sdg_data.dataset.build import BuildConfig
    from sdg_data.dataset.cli import ValidateConfig
    from sdg_data.dataset.viz import VizConfig
    from sdg_data.generate.runner import GenerateConfig
    from sdg_data.interop.richhf import RichHFConfig
    from sdg_data.interop.sdg30k import ImportConfig
    from sdg_data.scoring.evaluation import EvalConfig
    from sdg_data.scoring.image_level import ImageLevelConfig
    from sdg_data.scoring.reward import RewardConfig
    from train.boxflow.lora_eval import LoraEvalConfig
    from train.detector.detect import DetectConfig

    return [AnnotateConfig, DistillConfig, BuildConfig, EvalConfig, GenerateConfig, ImportConfig, RewardConfig,
            VizConfig, DetectConfig, ValidateConfig, LoraEvalConfig, RichHFConfig, ImageLevelConfig]  # fmt: skip


@pytest.mark.parametrize("cls", _config_classes(), ids=lambda c: c.__name__)
def test_every_setting_has_its_help_and_a_flag(cls):
    helps = field_help(cls)
    flags = {p.name for p in config_options(cls)}
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli", True) and not isinstance(f.default_factory, type(dict)):
            assert helps.get(f.name), f"{cls.__name__}.{f.name} has no help (a comment or docstring)"
    recipe_only = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("cli", True)}
    mappings = {f.name for f in dataclasses.fields(cls) if "dict" in str(f.type)}
    assert flags == {f.name for f in dataclasses.fields(cls)} - recipe_only - mappings


@pytest.mark.parametrize(
    "argv, flag",
    [(["build"], "--split-from"), (["distill"], "--max-attempts"), (["detect"], "--max-new-tokens"),
     (["generate"], "--guidance-scale"), (["eval"], "--box-scope"), (["reward"], "--w-box"),
     (["annotate", "pull"], "--consolidation"), (["annotate", "serve"], "--label-studio-bin"),
     (["viz"], "--image-root"), (["import-sdg30k"], "--raw-order")],
)  # fmt: skip
def test_help_lists_the_config_fields(argv, flag):
    res = CliRunner().invoke(app, [*argv, "--help"], terminal_width=200)
    assert res.exit_code == 0 and flag in res.output, res.output


def test_a_flag_and_a_recipe_set_the_same_field(tmp_path):
    from tests.conftest import DEMO

    recipe = tmp_path / "r.yaml"
    recipe.write_text("match: greedy\nbox_scope: all\n")
    args = ["eval", "--gt", str(DEMO / "gt.jsonl"), "--pred", str(DEMO / "pred.jsonl"), "--embedder", "none",
            "--out", str(tmp_path / "a.json")]  # fmt: skip
    assert CliRunner().invoke(app, [*args, "--config", str(recipe)]).exit_code == 0
    assert CliRunner().invoke(app, [*args[:-1], str(tmp_path / "b.json"), "--match", "greedy", "--box-scope",
                                    "all"]).exit_code == 0  # fmt: skip
    import json

    a, b = (json.loads((tmp_path / f"{x}.json").read_text())["config"] for x in "ab")
    assert a == b and a["match"] == "greedy"
    recipe.write_text("matchh: greedy\n")
    res = CliRunner().invoke(app, [*args, "--config", str(recipe)])
    assert res.exit_code == 2 and "unknown key(s) ['matchh']" in res.output


def test_sdg_train_relaunches_itself_under_accelerate(tmp_path, monkeypatch):
    import os

    from train import cli as train_cli

    launch = tmp_path / "acc.yaml"
    launch.write_text("compute_environment: LOCAL_MACHINE\nnum_processes: 2\n")
    seen = {}
    monkeypatch.setattr(os, "execv", lambda path, argv: seen.update(path=path, argv=argv))
    monkeypatch.setattr(train_cli, "__import__", None, raising=False)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("max_steps: 1\n")
    res = CliRunner().invoke(
        app, ["train", "sft", "--accelerate-config", str(launch), "--config", str(recipe), "--max_steps", "2"]
    )
    argv = seen["argv"]
    assert argv[1:5] == ["launch", "--config_file", str(launch), "-m"] and argv[5] == "train.detector.sft"
    assert argv[6:] == ["--config", str(recipe), "--max_steps", "2"], res.output
    res = CliRunner().invoke(app, ["train", "grpo", "--accelerate-config", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2 and "no such file" in res.output
    # by name, from another folder: the bundled launch file (its DeepSpeed config made absolute) and recipe
    import yaml

    from sdg_data.io.bundled import ROOT

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["train", "sft", "--accelerate-config", "zero2_1x8", "--config", "smoke"])
    argv = seen["argv"]
    launched = yaml.safe_load(Path(argv[3]).read_text())
    ds = launched["deepspeed_config"]["deepspeed_config_file"]
    assert Path(ds).is_absolute() and Path(ds).is_file() and launched["num_processes"] == 8
    assert argv[6:] == ["--config", str(ROOT / "train" / "recipes" / "sft" / "smoke.yaml")], res.output


def test_the_documented_file_tree_matches_the_tree():
    block = (ROOT / "docs" / "files.md").read_text().split("```", 2)[1]
    listed = []
    for line in block.splitlines():
        if not line.strip() or line.startswith(" "):
            continue
        tokens = line.split()  # "a.py, b.py  what they hold": the leading paths, joined by commas
        i = 0
        listed.append(tokens[0].rstrip(","))
        while tokens[i].endswith(",") and i + 1 < len(tokens):
            i += 1
            listed.append(tokens[i].rstrip(","))
    missing = [p for p in listed if not any(ROOT.glob(p.rstrip("/")))]
    assert not missing, f"docs/files.md lists paths that do not exist: {missing}"
    for path in sorted(ROOT.glob("*/**/*.py")):
        rel = str(path.relative_to(ROOT))
        if rel.startswith(("tests/", "bench/", ".venv")) or path.name == "__init__.py":
            continue
        assert any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in listed), f"{rel} not in docs/files.md"


def test_make_bench_runs_every_bench():
    makefile = (ROOT / "Makefile").read_text()
    for bench in sorted((ROOT / "bench").glob("bench_*.py")):
        assert f"bench/{bench.name}" in makefile, f"make bench does not run {bench.name}"


def test_train_commands_show_kebab_flags_and_take_both_spellings():
    from train.detector.args import SDGScriptArguments, kebab_parser

    parser = kebab_parser((SDGScriptArguments,))
    shown = parser.format_usage()
    assert "--dataset-name" in shown and "--dataset_name" not in shown
    a = parser.parse_args_and_config(["--dataset-name", "x", "--max-pixels", "1000"])[0]
    b = parser.parse_args_and_config(["--dataset_name", "x", "--max_pixels", "1000"])[0]
    assert a.dataset_name == b.dataset_name == "x" and a.max_pixels == b.max_pixels == 1000


def test_no_stage_imports_another_stage():
    """Stages meet through the core and the files they write, not through each other's modules (the one image
    encoder lives in sdg_data.io.images; detect once borrowed distill's)."""
    bad = {}
    for stage in STAGES:
        for path in sorted((ROOT / stage).rglob("*.py")):
            hits = sorted(m for m in _imports(path) if m.split(".")[0] in STAGES and m.split(".")[0] != stage)
            if hits:
                bad[str(path.relative_to(ROOT))] = hits
    assert not bad, bad


def test_one_data_url_encoder():
    import base64
    import io

    from PIL import Image

    from sdg_data.io.images import data_url

    im = Image.new("RGB", (300, 100), (10, 20, 30))
    head, body = data_url(im, max_side=150).split(",", 1)
    assert head == "data:image/jpeg;base64" and Image.open(io.BytesIO(base64.b64decode(body))).size == (150, 50)
    head, body = data_url(im, square=64, fmt="png").split(",", 1)
    assert head == "data:image/png;base64" and Image.open(io.BytesIO(base64.b64decode(body))).size == (64, 64)
    for path in [*ROOT.glob("distill/*.py"), *ROOT.glob("train/*.py")]:
        assert "b64encode(buf.getvalue())" not in path.read_text(), f"{path}: a second data-URL encoder"


# The core's roles, lowest first: a module imports only from its own role or a lower one, so a newcomer reads the
# core bottom-up and no role reaches into one that builds on it. The top-level modules are the data contract, except
# ``sdg_data/cli.py``, the command that mounts every role.
ROLES = ("contract", "io", "scoring", "dataset", "interop", "generate", "testkit", "shell")


def _role(module: str) -> str:
    parts = module.split(".")
    if module == "sdg_data.cli":
        return "shell"
    if len(parts) > 2 and parts[1] in ROLES:
        return parts[1]
    return "contract"


def test_core_roles_import_downward():
    bad = {}
    for path in sorted((ROOT / "sdg_data").rglob("*.py")):
        me = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for dep in _imports(path):
            if dep.split(".")[0] != "sdg_data" or dep == "sdg_data":
                continue
            if ROLES.index(_role(dep)) > ROLES.index(_role(me)):
                bad.setdefault(me, []).append(dep)
    assert not bad, f"modules importing from a role above their own: {bad}"


def test_every_role_package_has_its_map_and_its_commands():
    for role in ("io", "scoring", "dataset", "interop", "generate"):
        init = ROOT / "sdg_data" / role / "__init__.py"
        assert init.exists() and ast.get_docstring(ast.parse(init.read_text())), f"{role}/__init__.py has no map"
    for role in ("scoring", "dataset", "interop", "generate"):
        assert (ROOT / "sdg_data" / role / "cli.py").exists(), f"{role} has no cli.py"
    tops = sorted(p.stem for p in (ROOT / "sdg_data").glob("*.py"))
    assert tops == ["__init__", "answer", "boxes", "cli", "config", "detector_prompt", "matching", "records",
                    "splits"], tops  # fmt: skip


def test_no_import_cycles_between_modules():
    """Module-level and function-level imports alike: a cycle means two modules that cannot be read apart."""
    graph: dict[str, set[str]] = {}
    for pkg in ("sdg_data", *STAGES):
        for path in (ROOT / pkg).rglob("*.py"):
            me = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            graph[me] = {m for m in _imports(path) if m.split(".")[0] in ("sdg_data", *STAGES)}
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    seen, stack, cycles = set(), [], []

    def visit(m: str) -> None:
        if m in stack:
            cycles.append(stack[stack.index(m) :] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for d in sorted(graph[m]):
            visit(d)
        stack.pop()

    for m in sorted(graph):
        visit(m)
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_transport_settings_are_declared_once():
    """The server settings live in sdg_data.io.api_client.Transport; each stage config includes them with its own
    defaults, and no stage declares them again."""
    from distill.config import DistillConfig
    from sdg_data.io.api_client import Transport
    from train.detector.detect import DetectConfig
    from train.refine import RefineConfig

    names = [f.name for f in dataclasses.fields(Transport)]
    for path in (
        ROOT / "distill" / "config.py",
        ROOT / "train" / "detector" / "detect.py",
        ROOT / "train" / "refine.py",
    ):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        declared = {
            n.target.id for n in ast.walk(tree) if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
        }
        assert not declared & set(names), f"{path.name} declares {sorted(declared & set(names))} again"
    expect = {  # the stages' own defaults, as they were before the settings moved
        DistillConfig: (
            "https://generativelanguage.googleapis.com/v1beta/openai/",
            "OPENAI_API_KEY",
            16,
            120.0,
            6,
            60.0,
        ),
        DetectConfig: ("http://127.0.0.1:17142/v1", "SDG_DETECTOR_API_KEY", 32, 300.0, 4, 30.0),
        RefineConfig: ("https://api.openai.com/v1", "OPENAI_API_KEY", 8, 300.0, 4, 30.0),
    }
    for cls, want in expect.items():
        c = cls()
        assert (c.base_url, c.api_key_env, c.max_in_flight, c.timeout_s, c.max_retries, c.backoff_max_s) == want
        helps = field_help(cls)
        assert all(helps.get(n) for n in names), cls.__name__
        assert {p.name for p in config_options(cls)} >= set(names)
    with pytest.raises(ValueError, match="max_in_flight"):
        from sdg_data.config import load_config

        load_config(DetectConfig, None, {"max_in_flight": 0})
