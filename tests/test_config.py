import pytest

from sdg_data.config import ConfigError, load_config
from sdg_data.evaluation import EvalConfig
from sdg_data.reward import RewardConfig


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
    from sdg_data.build import BuildConfig
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
    from sdg_data.build import BuildConfig
    from sdg_data.config import ConfigError, load_config

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

    from sdg_data.build import BuildConfig
    from sdg_data.config import ConfigError, load_config

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
