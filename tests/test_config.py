import pytest

from sdg_data.config import ConfigError, load_config
from sdg_data.scoring.evaluation import EvalConfig
from sdg_data.scoring.reward import RewardConfig


def test_yaml_then_flags(tmp_path):
    p = tmp_path / "eval.yaml"
    p.write_text("match: greedy\nembedder: none\n")
    cfg = load_config(EvalConfig, p, {"embedder": "lexical", "box_scope": None})
    assert cfg.match == "greedy" and cfg.embedder == "lexical" and cfg.box_scope == "gt_positive"


def test_unknown_key_fails(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("w_box: 0.5\nw_boxx: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['w_boxx'\]"):
        load_config(RewardConfig, p)


@pytest.mark.parametrize(
    ("cls", "over", "msg"),
    [
        (EvalConfig, {"match": "best"}, "must be one of"),
        (RewardConfig, {"w_box": "high"}, "must be a float"),
        (EvalConfig, {"strict_format": "yes"}, "true or false"),
        (EvalConfig, {"nope": 1}, "unknown option"),
    ],
)
def test_bad_values(cls, over, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(cls, None, over)


def test_shipped_recipes_parse():
    from pathlib import Path

    from annotation.config import AnnotateConfig
    from distill.config import DistillConfig
    from sdg_data.dataset.build import BuildConfig
    from sdg_data.generate.runner import GenerateConfig

    root = Path(__file__).resolve().parents[1]
    recipes = sorted((root / "sdg_data" / "recipes").glob("*.yaml"))
    assert recipes, "no shipped recipes found"
    for p in recipes:
        kinds = {"eval": EvalConfig, "reward": RewardConfig, "build": BuildConfig, "generate": GenerateConfig}
        load_config(kinds[p.stem.split("_")[0]], p)
    for p in sorted((root / "distill" / "recipes").glob("*.yaml")):
        load_config(DistillConfig, p)
    annotate = sorted((root / "annotation" / "recipes").glob("*.yaml"))
    assert annotate
    for p in annotate:
        load_config(AnnotateConfig, p)


def test_a_list_setting_refuses_a_bare_string_and_checks_its_items(tmp_path):
    """`image_roots: /some/folder` was read letter by letter, making "/" an allowed root: now a one-line error."""
    from sdg_data.config import ConfigError, load_config
    from sdg_data.dataset.build import BuildConfig

    recipe = tmp_path / "r.yaml"
    recipe.write_text("image_roots: /some/folder\n")
    with pytest.raises(ConfigError, match=r"image_roots must be a list"):
        load_config(BuildConfig, recipe)
    recipe.write_text("image_roots: [/a, 3]\n")
    with pytest.raises(ConfigError, match=r"image_roots\[1\] must be a string"):
        load_config(BuildConfig, recipe)
    recipe.write_text("image_roots: [/a, /b]\n")
    assert load_config(BuildConfig, recipe).image_roots == ["/a", "/b"]


def test_a_yaml_alias_bomb_is_one_line_in_bounded_memory(tmp_path):
    import resource

    from sdg_data.config import ConfigError, load_config
    from sdg_data.dataset.build import BuildConfig

    levels = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    levels += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 12)]
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text("\n".join(levels) + "\nimage_roots: *a11\n")
    assert recipe.stat().st_size < 1000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ConfigError, match="aliases") as err:
        load_config(BuildConfig, recipe)
    assert len(str(err.value)) < 300 and "\n" not in str(err.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KB: no expansion happened


def _configs():
    """Every config dataclass a command or a training script builds."""
    from annotation.config import AnnotateConfig
    from distill.config import DistillConfig
    from sdg_data.dataset.build import BuildConfig
    from sdg_data.dataset.viz import VizConfig
    from sdg_data.generate.runner import GenerateConfig
    from sdg_data.interop.richhf import RichHFConfig
    from train.boxflow.config import BoxFlowConfig, BoxFlowRewardConfig
    from train.boxflow.lora_eval import LoraEvalConfig
    from train.detector.detect import DetectConfig
    from train.refine import RefineConfig

    return [
        AnnotateConfig, DistillConfig, BuildConfig, GenerateConfig, RichHFConfig, VizConfig, EvalConfig,
        RewardConfig, BoxFlowConfig, BoxFlowRewardConfig, DetectConfig, LoraEvalConfig, RefineConfig,
    ]  # fmt: skip


def test_every_numeric_setting_is_finite_and_in_its_range():
    """The class, not the examples: for every numeric field of every config, NaN and infinity fail, and a value just
    outside a declared range fails with the field's name, through the recipe/flag path and (for the configs trl's
    parser builds) through the constructor."""
    import dataclasses
    import math
    import typing

    from sdg_data.config import _bounds

    checked = bounded = 0
    for cls in _configs():
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            base, bounds = _bounds(hints[f.name])
            kinds = set(typing.get_args(base)) or {base}
            if not kinds & {int, float}:
                continue
            build = cls if "Box" in cls.__name__ else None  # built by trl's parser: checked in __post_init__
            probes = [math.nan, math.inf] if float in kinds else []
            for b in bounds:
                probes += [x for x in (b.ge - 1 if b.ge is not None else None, b.gt, b.le, b.lt) if x is not None]
                probes += [b.le + 1] if b.le is not None else []
                bounded += 1
            probes = [p for p in probes if any(b.why_not(p) for b in bounds) or not math.isfinite(p)]
            for p in probes:
                with pytest.raises(ConfigError, match=rf"{cls.__name__}\.{f.name} must be"):
                    load_config(cls, None, {f.name: p})
                if build:
                    with pytest.raises(ConfigError, match=f.name):
                        build(**{f.name: p})
                checked += 1
    assert bounded > 80 and checked > 150, (bounded, checked)


@pytest.mark.parametrize(
    "cls_name, over, msg",
    [
        ("GenerateConfig", {"limit": -1}, "limit must be >= 1, got -1"),
        ("DistillConfig", {"max_retries": -3}, "max_retries must be >= 0"),
        ("GenerateConfig", {"lora_scale": float("nan")}, "lora_scale must be a finite number"),
        ("BoxFlowConfig", {"ema_decay": 2.0}, "ema_decay must be < 1"),
        ("BoxFlowConfig", {"save_steps": 0}, "save_steps must be >= 1"),
    ],
)
def test_the_reported_out_of_range_settings_fail(cls_name, over, msg):
    cls = {c.__name__: c for c in _configs()}[cls_name]
    with pytest.raises(ConfigError, match=msg):
        load_config(cls, None, over)
    load_config(cls, None, {})  # the defaults are in range
