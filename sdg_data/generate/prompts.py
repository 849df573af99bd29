"""Reading prompts (JSONL, CSV, Parquet or a Hugging Face dataset) and deciding each prompt's split."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdg_data.records import Reject
from sdg_data.splits import prompt_key, split_of


TEXT_COLUMNS = ("prompt", "caption")


@dataclass(frozen=True)
class Prompt:
    text: str
    row: int  # 1-based position in the input, for errors
    prompt_id: str  # the input's own id if it has one, else a hash of the text
    split: str | None = None  # a split the input already fixes (e.g. Pick-a-Pic's partition)


def _rows(source: str) -> list[dict[str, Any]]:
    p = Path(source)
    if p.is_file():
        if p.suffix == ".jsonl":  # a line that is not JSON becomes that row's reject, not the run's end
            from sdg_data.io.jsonl import iter_lines

            return [obj for _, obj in iter_lines(p)]
        if p.suffix == ".csv":
            try:
                with p.open(encoding="utf-8", newline="") as f:
                    return list(csv.DictReader(f))
            except (UnicodeDecodeError, csv.Error) as exc:
                raise ValueError(f"{p}: not a UTF-8 CSV file ({exc})") from None
        if p.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(p).to_pylist()
        if p.suffix == ".txt":
            from sdg_data.io.jsonl import LineError

            rows: list[Any] = []
            for raw in p.read_bytes().split(b"\n"):  # "\n" only: U+2028 inside a prompt is not a line break
                try:
                    line = raw.decode("utf-8").rstrip("\r")
                except UnicodeDecodeError as exc:
                    rows.append(LineError(f"not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"))
                    continue
                if line.strip():
                    rows.append({"prompt": line})
            return rows
        raise ValueError(f"{p}: prompts must be .jsonl, .csv, .parquet or .txt (or a Hugging Face dataset)")
    # a Hugging Face dataset: NAME or NAME:SPLIT (a local dataset folder works too)
    from datasets import load_dataset

    name, _, split = source.partition(":")
    ds = load_dataset(name, split=split or "train")
    return ds.to_list()


def read_prompts(source: str) -> tuple[list[Prompt], list[Reject], int]:
    """Usable prompts, rejects (where: the row; the row as read) and the number of rows read. Repeats of a prompt
    are kept once."""
    rows = _rows(str(source))
    prompts: list[Prompt] = []
    rejects: list[Reject] = []
    seen: set[str] = set()
    for n, row in enumerate(rows, 1):
        why, text, col = None, None, None
        if isinstance(row, ValueError):  # a line that could not be read (jsonl.LineError)
            why, row = str(row), None
        elif not isinstance(row, dict):
            why = f"row: must be an object, got {type(row).__name__}"
        else:
            col = next((c for c in TEXT_COLUMNS if c in row), None)
            text = row.get(col) if col else None
            split = row.get("split")
            if not isinstance(text, str) or not text.strip():
                why = f"{col}: empty" if col else f"no {' or '.join(TEXT_COLUMNS)} column (has {sorted(row)})"
            elif prompt_key(text) in seen:
                why = f"{col}: repeats an earlier prompt"
            elif split is not None and split not in ("train", "test"):
                why = f"split: must be train or test, got {split!r}"
                seen.add(prompt_key(text))  # seen all the same: a later copy of it is a repeat
        if why is not None:
            rejects.append(Reject(why, "prompt", None, f"{source} row {n}", n, row))
            continue
        key = prompt_key(text)
        seen.add(key)
        pid = row.get("prompt_id") or row.get("id")
        if not isinstance(pid, (str, int)) or isinstance(pid, bool):
            pid = hashlib.sha256(key.encode()).hexdigest()[:16]
        prompts.append(Prompt(text.strip(), n, str(pid), split))
    return prompts, rejects, len(rows)


def decide_split(prompt: Prompt, test_fraction: float, salt: str = "sdg") -> str:
    """The prompt's split by the one rule (:mod:`sdg_data.splits`): the input's if it gives one, else by rank."""
    return split_of(prompt.text, test_fraction, salt, prompt.split)
