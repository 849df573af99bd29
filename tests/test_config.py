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
