"""Reading prompts (JSONL, CSV, Parquet or a Hugging Face dataset) and deciding each prompt's split."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


TEXT_COLUMNS = ("prompt", "caption")


@dataclass(frozen=True)
class Prompt:
    text: str
    row: int  # 1-based position in the input, for errors
    prompt_id: str  # the input's own id if it has one, else a hash of the text
    split: str | None = None  # a split the input already fixes (e.g. Pick-a-Pic's partition)


def prompt_key(text: str) -> str:
    """Prompts that differ only in case and spacing are the same prompt (and land in the same split)."""
    return " ".join(text.lower().split())


def _rows(source: str) -> list[dict[str, Any]]:
    p = Path(source)
    if p.is_file():
        if p.suffix == ".jsonl":
            out = []
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{p}:{n}: not JSON ({exc.msg})") from None
            return out
        if p.suffix == ".csv":
            with p.open(encoding="utf-8", newline="") as f:
                return list(csv.DictReader(f))
        if p.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(p).to_pylist()
        if p.suffix == ".txt":
            return [{"prompt": line} for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        raise ValueError(f"{p}: prompts must be .jsonl, .csv, .parquet or .txt (or a Hugging Face dataset)")
    # a Hugging Face dataset: NAME or NAME:SPLIT (a local dataset folder works too)
    from datasets import load_dataset

    name, _, split = source.partition(":")
    ds = load_dataset(name, split=split or "train")
    return ds.to_list()


def read_prompts(source: str) -> tuple[list[Prompt], list[dict[str, Any]], int]:
    """Usable prompts, rejects (row, reason) and the number of rows read. Repeats of a prompt are kept once."""
    rows = _rows(str(source))
    prompts: list[Prompt] = []
    rejects: list[dict[str, Any]] = []
    seen: set[str] = set()
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            rejects.append({"row": n, "reason": f"row: must be an object, got {type(row).__name__}"})
            continue
        col = next((c for c in TEXT_COLUMNS if c in row), None)
        text = row.get(col) if col else None
        if not isinstance(text, str) or not text.strip():
            reason = f"{col}: empty" if col else f"no {' or '.join(TEXT_COLUMNS)} column (has {sorted(row)})"
            rejects.append({"row": n, "reason": reason, "record": row})
            continue
        key = prompt_key(text)
        if key in seen:
            rejects.append({"row": n, "reason": f"{col}: repeats an earlier prompt", "prompt": text})
            continue
        seen.add(key)
        split = row.get("split")
        if split is not None and split not in ("train", "test"):
            rejects.append({"row": n, "reason": f"split: must be train or test, got {split!r}", "prompt": text})
            continue
        pid = row.get("prompt_id") or row.get("id") or hashlib.sha256(key.encode()).hexdigest()[:16]
        prompts.append(Prompt(text.strip(), n, str(pid), split))
    return prompts, rejects, len(rows)


def decide_split(prompt: Prompt, test_fraction: float, salt: str = "sdg") -> str:
    """The prompt's split: the input's if it gives one, else a stable hash of the prompt text against
    ``test_fraction``, so every image of a prompt (any generator, any seed, any rank) lands in the same split."""
    if prompt.split:
        return prompt.split
    h = int.from_bytes(hashlib.blake2b(f"{salt}\0{prompt_key(prompt.text)}".encode(), digest_size=8).digest(), "big")
    return "test" if h / 2**64 < test_fraction else "train"
