"""Detector training and inference: recipes and launch configs parse, SFT and GRPO run on a tiny random Qwen3-VL
from a dataset built by `sdg build`, the reward sees the ground truth, checkpoints reload in `sdg detect`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


pytest.importorskip("trl")

from distill.config import DistillConfig  # noqa: E402
from distill.fake_teacher import FakeTeacher, FakeTeacherServer  # noqa: E402
from distill.runner import distill_file  # noqa: E402
from sdg_data.config import load_config  # noqa: E402
from sdg_data.dataset.build import BuildConfig, build_dataset  # noqa: E402
from tests.conftest import DEMO  # noqa: E402
from train.detector.detect import DetectConfig, detect, read_inputs  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "train" / "recipes"
LAUNCH = ROOT / "train" / "launch"
SMOKE_SFT = RECIPES / "sft" / "smoke.yaml"
SMOKE_GRPO = RECIPES / "grpo" / "smoke.yaml"
CPU = ["--output_dir", "x", "--use_cpu", "true"]  # the paper recipes ask for bf16, which needs this on a CPU box


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train-data")
    distill_file(DEMO / "sample" / "records.jsonl", root / "distill", DistillConfig(progress=False))
    build_dataset(
        root / "distill" / "distilled.jsonl",
        root / "ds",
        BuildConfig(test_fraction=0.33, image_roots=[str(DEMO)]),
        progress=False,
    )
    return root / "ds"


@pytest.fixture(scope="session")
def tiny_vl(tmp_path_factory) -> Path:
    from sdg_data.testkit.models import save_tiny_qwen3_vl

    return save_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny-qwen3-vl"))


def _sft_argv(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--config",
        str(SMOKE_SFT),
        "--model_name_or_path",
        str(model),
        "--dataset_name",
        str(data),
        "--output_dir",
        str(out),
        "--disable_tqdm",
        "true",
        *extra,
    ]


@pytest.fixture(scope="session")
def sft_run(tiny_vl, dataset, tmp_path_factory):
    from train.detector import sft

    out = tmp_path_factory.mktemp("sft")
    trainer = sft.main(_sft_argv(tiny_vl, dataset, out))
    return out, trainer


# ------------------------------------------------------------------ recipes and launch configs
def _world(recipe: Path) -> int:
    return 16 if "sdg30k" in recipe.name else 1  # the paper's 2 x 8 GPUs; smoke recipes run in one process


@pytest.mark.parametrize("recipe", sorted((RECIPES / "sft").glob("*.yaml")), ids=lambda p: p.name)
def test_sft_recipes_parse(recipe):
    from trl import ModelConfig, SFTConfig

    from train.detector.args import SDGScriptArguments, parse

    s, t, m = parse(
        (SDGScriptArguments, SFTConfig, ModelConfig), ["--config", str(recipe), *CPU], world=_world(recipe)
    )
    assert s.dataset_config == "sft" and s.freeze_vision
    assert t.completion_only_loss is True  # loss on the response only
    if "sdg30k" in recipe.name:  # the paper's values
        assert (t.learning_rate, t.lr_scheduler_type.value, t.warmup_steps) == (3e-5, "cosine", 0.05)
        assert (m.model_name_or_path, t.max_length, t.num_train_epochs) == ("Qwen/Qwen3-VL-4B-Instruct", 5100, 1)
        assert (s.min_pixels, s.max_pixels) == (200_704, 1_280_000)
        assert t.bf16 and t.activation_checkpointing
        assert t.per_device_train_batch_size * t.gradient_accumulation_steps * 16 == 16


@pytest.mark.parametrize("recipe", sorted((RECIPES / "grpo").glob("*.yaml")), ids=lambda p: p.name)
def test_grpo_recipes_parse(recipe):
    from trl import GRPOConfig, ModelConfig

    from sdg_data.scoring.reward import RewardConfig
    from train.detector.args import SDGGRPOScriptArguments, check_batch, parse

    s, t, m, r = parse(
        (SDGGRPOScriptArguments, GRPOConfig, ModelConfig, RewardConfig),
        ["--config", str(recipe), *CPU],
        world=_world(recipe),
    )
    assert r.box_order == "xyxy"
    info = check_batch(t, t.num_generations, world=_world(recipe))
    assert info["global_batch"] % t.num_generations == 0
    if "sdg30k" in recipe.name:
        assert (t.num_generations, t.temperature, t.top_p, t.max_completion_length) == (8, 1.0, 0.85, 4096)
        assert (t.learning_rate, t.num_train_epochs, t.beta) == (5e-6, 2, 0.01)
        assert (t.per_device_train_batch_size, t.gradient_accumulation_steps) == (4, 2)  # the paper's 16-GPU run
        assert t.use_vllm and t.vllm_mode == "colocate"
        assert s.reward_embedder == "Qwen/Qwen3-Embedding-0.6B"


def test_global_batch_is_derived_for_the_world_size():
    from trl import GRPOConfig, ModelConfig, SFTConfig

    from sdg_data.scoring.reward import RewardConfig
    from train.detector.args import SDGGRPOScriptArguments, SDGScriptArguments, check_batch, format_batch, parse

    sft = RECIPES / "sft" / "qwen3_vl_4b_sdg30k.yaml"
    grpo = RECIPES / "grpo" / "qwen3_vl_4b_sdg30k.yaml"
    for ws, accum in ((1, 16), (8, 2), (16, 1)):
        _, t, _ = parse((SDGScriptArguments, SFTConfig, ModelConfig), ["--config", str(sft), *CPU], world=ws)
        assert t.gradient_accumulation_steps == accum and check_batch(t, world=ws)["global_batch"] == 16
    # one GPU: 32 micro-batches of 4 = 128 completions = 16 images x 8
    grpo_types = (SDGGRPOScriptArguments, GRPOConfig, ModelConfig, RewardConfig)
    _, t, _, reward = parse(grpo_types, ["--config", str(grpo), *CPU, "--w_box", "0.5"], world=1)
    assert reward.w_box == 0.5 and reward.box_order == "xyxy"  # the reward's constants are recipe keys and flags
    info = check_batch(t, t.num_generations, world=1)
    assert (t.gradient_accumulation_steps, t.steps_per_generation, info["prompts_per_generation"]) == (32, 32, 16)
    assert "global batch 128 = 1 processes x 4 per device x 32 accumulation" in format_batch(info)
    with pytest.raises(ValueError, match="global_batch_size 128 is not a multiple of world size 3"):
        parse(grpo_types, ["--config", str(grpo), *CPU], world=3)


def test_generation_batch_must_hold_whole_groups():
    from trl import GRPOConfig

    from train.detector.args import check_batch

    t = GRPOConfig(output_dir="x", per_device_train_batch_size=4, num_generations=4, use_cpu=True, bf16=False)
    assert check_batch(t, 4, world=3)["prompts_per_generation"] == 3
    with pytest.raises(
        ValueError, match=r"3 processes x 4 per device x 1 steps per generation = 12\) is not divisible"
    ):
        check_batch(t, 8, world=3)


def test_unknown_recipe_key_fails(tmp_path):
    from trl import ModelConfig, SFTConfig

    from train.detector.args import SDGScriptArguments, parse

    bad = tmp_path / "bad.yaml"
    bad.write_text(SMOKE_SFT.read_text() + "warmup_ratio: 0.05\n")
    with pytest.raises(ValueError, match="warmup_ratio"):
        parse((SDGScriptArguments, SFTConfig, ModelConfig), ["--config", str(bad), "--output_dir", "x"])


@pytest.mark.parametrize("path", sorted(LAUNCH.glob("zero*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_parse(path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(path))
    stage = int(path.name[4])
    nodes = int(path.stem.split("_")[1][0])
    assert cfg.distributed_type.value == "DEEPSPEED"
    assert (cfg.num_machines, cfg.num_processes) == (nodes, 8 * nodes)
    ds_file = ROOT / cfg.deepspeed_config["deepspeed_config_file"]
    ds = json.loads(ds_file.read_text())
    assert ds["zero_optimization"]["stage"] == stage
    # batch and precision come from the recipe, never from two places
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        assert ds[key] == "auto"
    assert ds["bf16"]["enabled"] == "auto"


def test_deepspeed_json_is_accepted_by_the_hf_integration():
    from transformers.integrations.deepspeed import HfDeepSpeedConfig

    for z in (2, 3):
        cfg = HfDeepSpeedConfig(str(LAUNCH / f"ds_zero{z}.json"))
        assert cfg.get_value("zero_optimization.stage") == z
        assert cfg.is_zero3() == (z == 3)


def test_slurm_script_derives_rank_master_and_recipe(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    # a long host list: a launcher that stops reading after the first host must not kill the job (SIGPIPE)
    (fake / "scontrol").write_text("#!/usr/bin/env bash\necho gpu-node-07\nseq -f 'gpu-node-%g' 8 200000\n")
    (fake / "srun").write_text(  # one "task" per node, each with its SLURM_NODEID
        '#!/usr/bin/env bash\nwhile [[ "$1" == --* ]]; do shift; done\n'
        'for i in $(seq 0 $((SLURM_NNODES-1))); do SLURM_NODEID=$i bash -c "${@:2}"; done\n'
    )
    (fake / "python").write_text("#!/usr/bin/env bash\nprintf '[%s]' \"$@\"; echo\n")  # shows word boundaries
    for f in fake.iterdir():
        f.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{fake}:{os.environ['PATH']}",
        "SLURM_NNODES": "2",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "gpu-node-[07-08]",
        "SLURM_SUBMIT_DIR": str(ROOT),
        "PYTHON": str(fake / "python"),
    }
    recipe = "train/recipes/grpo/qwen3_vl_4b_sdg30k.yaml"
    out = subprocess.run(
        ["bash", str(LAUNCH / "slurm.sbatch"), "grpo", recipe, "--dataset_name", "/data/sdg 30k"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [ln for ln in out.stdout.splitlines() if "[accelerate.commands.launch]" in ln]
    assert len(lines) == 2
    for rank, line in enumerate(lines):
        assert f"[--machine_rank][{rank}]" in line
        assert "[--main_process_ip][gpu-node-07]" in line and "[--num_processes][16]" in line
        assert "[--config_file][train/launch/zero2_2x8.yaml]" in line
        assert line.endswith(f"[train/detector/grpo.py][--config][{recipe}][--dataset_name][/data/sdg 30k]")
    bad = subprocess.run(["bash", str(LAUNCH / "slurm.sbatch"), "dpo", recipe], env=env, capture_output=True)
    assert bad.returncode == 2


# ------------------------------------------------------------------ SFT
def test_sft_trains_on_the_built_dataset_and_saves_a_checkpoint(sft_run):
    out, trainer = sft_run
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(0 < x < 20 for x in losses)
    assert trainer.state.global_step == 2
    assert (out / "model.safetensors").exists() and (out / "processor_config.json").exists()
    # the vision tower stayed frozen, the language model trained
    assert not any(p.requires_grad for p in trainer.model.model.visual.parameters())
    assert json.loads((out / "processor_config.json").read_text())["processor_class"] == "Qwen3VLProcessor"


def test_sft_loss_covers_the_response_and_its_end_of_turn_only(tiny_vl, dataset, tmp_path):
    from trl import ModelConfig, SFTConfig

    from train.detector.args import SDGScriptArguments, parse
    from train.detector.sft import build_trainer

    s, t, m = parse((SDGScriptArguments, SFTConfig, ModelConfig), _sft_argv(tiny_vl, dataset, tmp_path))
    trainer = build_trainer(s, t, m)
    batch = next(iter(trainer.get_train_dataloader()))
    tok = trainer.processing_class.tokenizer
    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        kept = tok.decode(ids[labels != -100].tolist())
        assert kept.startswith("<think>") and "<answer>" in kept
        assert kept.rstrip("\n").endswith("</answer><|im_end|>")  # the model learns to stop
        assert "<|image_pad|>" not in kept and "Caption:" not in kept


# ------------------------------------------------------------------ GRPO
def test_grpo_from_the_sft_checkpoint_rewards_with_the_ground_truth(sft_run, dataset, tmp_path, monkeypatch):
    from datasets import load_dataset

    from sdg_data.scoring.reward import SDGReward
    from train.detector import grpo

    seen: list[tuple[str, list]] = []

    class Recording(SDGReward):
        def __call__(self, completions, **kwargs):
            seen.extend(zip(kwargs["image_id"], kwargs["gt_defects"]))
            return super().__call__(completions, **kwargs)

    real = grpo.build_reward

    def recording(script_args, reward_cfg=None, device=None):
        r = real(script_args, reward_cfg, device)
        return Recording(embedder=r.embedder, config=r.config)

    monkeypatch.setattr(grpo, "build_reward", recording)
    sft_dir, _ = sft_run
    argv = [
        "--config",
        str(SMOKE_GRPO),
        "--model_name_or_path",
        str(sft_dir),
        "--dataset_name",
        str(dataset),
        "--output_dir",
        str(tmp_path / "grpo"),
        "--disable_tqdm",
        "true",
    ]
    trainer = grpo.main(argv)
    assert trainer.state.global_step == 2
    rows = load_dataset(str(dataset), "grpo", split="train")
    truth = {r["image_id"]: r["gt_defects"] for r in rows}
    assert len(seen) == 2 * 4  # 2 steps x (2 prompts x 2 generations)
    for image_id, gt in seen:
        assert gt == truth[image_id]
    logged = {k for h in trainer.state.log_history for k in h}
    for key in ("sdg/r_box", "sdg/r_desc", "sdg/r_imp", "sdg/format_fail_rate", "frac_reward_zero_std", "kl"):
        assert key in logged
    assert (tmp_path / "grpo" / "model.safetensors").exists()


# ------------------------------------------------------------------ detect
def test_detect_reloads_a_checkpoint_batches_match_single_and_resume(sft_run, dataset, tmp_path):
    sft_dir, _ = sft_run
    cfg = DetectConfig(
        model=str(sft_dir),
        device="cpu",
        dtype="float32",
        max_new_tokens=12,
        min_pixels=1024,
        max_pixels=4096,
        progress=False,
    )
    one = detect(dataset, tmp_path / "b1", DetectConfig(**{**cfg.__dict__, "batch_size": 1}))
    four = detect(dataset, tmp_path / "b4", DetectConfig(**{**cfg.__dict__, "batch_size": 4}))
    assert one["predicted"] == four["predicted"] == one["read"] > 0
    rows1 = [json.loads(x) for x in (tmp_path / "b1" / "predictions.jsonl").read_text().splitlines()]
    rows4 = [json.loads(x) for x in (tmp_path / "b4" / "predictions.jsonl").read_text().splitlines()]
    assert [r["response"] for r in rows1] == [r["response"] for r in rows4]  # left padding changes nothing
    assert rows1[0]["provenance"]["model"] == str(sft_dir) and "format_ok" in rows1[0]

    # a crash after two lines, the second torn mid-write: the rerun redoes only what is missing
    part = tmp_path / "resume"
    part.mkdir()
    text = (tmp_path / "b4" / "predictions.jsonl").read_text().splitlines(keepends=True)
    (part / "predictions.jsonl").write_text(text[0] + text[1][:25])
    again = detect(dataset, part, DetectConfig(**{**cfg.__dict__, "batch_size": 4}))
    assert again["resumed"] == 1 and again["predicted"] == four["predicted"]
    assert (part / "predictions.jsonl").read_text() == (tmp_path / "b4" / "predictions.jsonl").read_text()


def test_detect_inputs_folder_jsonl_and_rejects(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("a", "b", "c"):
        Image.new("RGB", (40, 30), "red").save(folder / f"{name}.png")
    (folder / "a.txt").write_text("a red square\n")
    (folder / "b.txt").write_text("a blue circle")
    got = read_inputs(folder, DetectConfig())
    assert [(i.image_id, i.caption) for i in got.items] == [("a", "a red square"), ("b", "a blue circle")]
    assert got.read == 3 and got.rejects[0].image_id == "c" and "c.txt is missing" in got.rejects[0].reason
    assert len(read_inputs(folder, DetectConfig(allow_missing_caption=True)).items) == 3

    recs = tmp_path / "recs.jsonl"
    lines = [
        {"image_id": "a", "image_path": "imgs/a.png", "caption": "x", "defects": []},
        {"image_id": "a", "image_path": "imgs/b.png", "caption": "y", "defects": []},
        {"image_id": "z", "image_path": "imgs/missing.png", "caption": "z", "defects": []},
    ]
    recs.write_text("".join(json.dumps(x) + "\n" for x in lines))
    got = read_inputs(recs, DetectConfig())
    assert [i.image_id for i in got.items] == ["a"] and got.read == 3
    reasons = " | ".join(r.reason for r in got.rejects)
    assert "duplicate" in reasons and "does not exist" in reasons
    with pytest.raises(ValueError, match="give a records JSONL"):
        read_inputs(_touch(tmp_path / "x.csv"), DetectConfig())


def _touch(p: Path) -> Path:
    p.write_text("")
    return p


def test_detect_openai_backend_against_a_loopback_server(dataset, tmp_path, monkeypatch):
    """Served detector: every image is asked once (plus retries of injected faults), replies are parsed, and
    the API key is sent but never written anywhere."""
    answer = (
        "<think>one thing looks wrong</think><answer>"
        '[{"box_2d": [100, 200, 300, 400], "label": "artifact", "description": "melted hand", "importance": 70}]'
        "</answer>"
    )

    def responder(body, image_id):
        user = body["messages"][1]["content"]
        assert user[0]["type"] == "image_url" and user[0]["image_url"]["url"].startswith("data:image/png;base64,")
        assert "Caption:" in user[1]["text"]
        return answer

    teacher = FakeTeacher(fault_rate=0.3, faults=("500", "429"), seed=3, responder=responder)
    monkeypatch.setenv("SDG_DETECTOR_API_KEY", "sk-secret-test-key")
    with FakeTeacherServer(teacher) as srv:
        cfg = DetectConfig(
            backend="openai",
            base_url=srv.base_url,
            model="sdg-detector",
            max_in_flight=4,
            backoff_base_s=0.01,
            backoff_max_s=0.05,
            max_retries=8,
            progress=False,
        )
        s = detect(dataset, tmp_path / "api", cfg)
    assert s["predicted"] == s["read"] and s["format_ok"] == s["predicted"] and s["rejected"] == 0
    rows = [json.loads(x) for x in (tmp_path / "api" / "predictions.jsonl").read_text().splitlines()]
    assert rows[0]["defects"][0]["box_2d"] == [100, 200, 300, 400] and rows[0]["response"] == answer
    ok_per_id = {}
    for iid, outcome in teacher.log:
        ok_per_id[iid] = ok_per_id.get(iid, 0) + (outcome == "ok")
    assert set(ok_per_id.values()) == {1} and sum(teacher.injected.values()) > 0
    for f in (tmp_path / "api").iterdir():
        assert "sk-secret-test-key" not in f.read_text()


def test_detect_server_down_rejects_with_reason(dataset, tmp_path):
    down = {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "max_retries": 1, "backoff_base_s": 0.01}
    cfg = DetectConfig(**down, timeout_s=2, limit=2, progress=False)
    s = detect(dataset, tmp_path / "down", cfg)
    assert s["predicted"] == 0 and s["rejected"] == 2
    rej = [json.loads(x) for x in (tmp_path / "down" / "detect.rejects.jsonl").read_text().splitlines()]
    assert all("transport" in r["reason"] and "connection" in r["reason"] for r in rej)


def test_detect_predictions_feed_sdg_eval(sft_run, dataset, tmp_path):
    from typer.testing import CliRunner

    from sdg_data.cli import app

    sft_dir, _ = sft_run
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "detect",
            str(dataset),
            "--out",
            str(tmp_path / "d"),
            "--model",
            str(sft_dir),
            "--config",
            str(RECIPES / "detect" / "smoke.yaml"),
            "--max-new-tokens",
            "8",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "eval",
            "--gt",
            str(dataset),
            "--pred",
            str(tmp_path / "d" / "predictions.jsonl"),
            "--embedder",
            "lexical",
            "--out",
            str(tmp_path / "eval.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "eval.json").read_text())
    assert "artifact" in report and "misalignment" in report


def test_sdg_train_forwards_to_the_script_parser(tmp_path):
    from typer.testing import CliRunner

    from sdg_data.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 1.0e-5\nuse_cpu: true\nnot_an_option: 3\n")
    res = CliRunner().invoke(app, ["train", "sft", "--config", str(bad), "--output_dir", str(tmp_path)])
    assert res.exit_code == 2 and "not_an_option" in res.output


# ------------------------------------------------------------------ DeepSpeed
@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun not installed",
)
def test_single_process_deepspeed_smoke(tiny_vl, dataset, tmp_path):
    """ZeRO-2 through the HF/trl integration under torchrun (one process: several CPU processes need a GPU box).
    The first run on a machine compiles DeepSpeed's shared-memory op (about a minute), cached afterwards."""
    torchrun = str(Path(sys.executable).parent / "torchrun")
    out = tmp_path / "ds"
    cmd = [
        torchrun,
        "--nproc_per_node",
        "1",
        str(ROOT / "train" / "detector" / "sft.py"),
        *_sft_argv(tiny_vl, dataset, out, "--deepspeed", str(LAUNCH / "ds_zero2.json")),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "distributed: DistributedType.DEEPSPEED" in res.stderr
    assert (out / "model.safetensors").exists()


def test_detect_config_recipes_load():
    for recipe in sorted((RECIPES / "detect").glob("*.yaml")):
        cfg = load_config(DetectConfig, recipe)
        assert cfg.backend in ("transformers", "openai")


def test_built_sft_config_feeds_sft_trainer_as_is(tiny_vl, dataset, tmp_path):
    """The `sft` config needs no glue: SFTTrainer takes its messages + images rows directly."""
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    from train.detector.modeling import load_model, load_processor

    rows = load_dataset(str(dataset), "sft", split="train").select_columns(["messages", "images"]).select(range(4))
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=2,
        use_cpu=True,
        bf16=False,
        max_length=None,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    proc = load_processor(str(tiny_vl))
    trainer = SFTTrainer(
        model=load_model(str(tiny_vl), dtype="float32"), args=args, train_dataset=rows, processing_class=proc
    )
    trainer.train()
    assert trainer.state.global_step == 1


def test_detect_unreadable_image_is_rejected_not_the_batch(sft_run, tmp_path):
    from PIL import Image

    sft_dir, _ = sft_run
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("a", "b", "c"):
        Image.new("RGB", (48, 48), "blue").save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text("a blue square")
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    cpu = {"device": "cpu", "dtype": "float32", "min_pixels": 1024, "max_pixels": 4096, "progress": False}
    cfg = DetectConfig(model=str(sft_dir), max_new_tokens=4, batch_size=3, **cpu)
    s = detect(folder, tmp_path / "out", cfg)
    assert (s["read"], s["predicted"], s["rejected"]) == (3, 2, 1)
    rej = json.loads((tmp_path / "out" / "detect.rejects.jsonl").read_text())
    assert rej["image_id"] == "b" and rej["reason"].startswith("image:")
