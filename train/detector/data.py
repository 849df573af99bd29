"""Reading the ``sft`` and ``grpo`` configs that ``sdg build`` writes, in the columns trl's trainers take."""

from __future__ import annotations

from typing import Any


SFT_COLUMNS = ["messages", "images"]
# GRPO passes every other column to the reward function; gt_defects is what SDGReward reads.
GRPO_COLUMNS = ["prompt", "images", "gt_defects", "image_id"]


def load_split(name_or_path: str, config: str | None, split: str, max_rows: int | None = None):
    from datasets import load_dataset

    if not name_or_path:
        raise ValueError("dataset_name is required: a folder written by `sdg build` (or a Hub id with its configs)")
    ds = load_dataset(name_or_path, name=config, split=split)
    if max_rows is not None:
        ds = ds.select(range(min(max_rows, len(ds))))
    return ds


def _require(ds: Any, columns: list[str], what: str, source: str) -> None:
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"{source}: the {what} dataset lacks column(s) {missing} (has {ds.column_names}); "
            f"point dataset_name at a folder written by `sdg build` and dataset_config at its {what!r} config"
        )


def _split_turns(messages: list[dict[str, Any]]) -> dict[str, Any]:
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("an sft row's messages must end with the assistant's response")
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def sft_dataset(name_or_path: str, config: str | None = "sft", split: str = "train", max_rows: int | None = None):
    """Conversational prompt-completion rows (``prompt``: system + user with the image placeholder, ``completion``:
    the assistant's response) and ``images``.

    The stored ``messages`` are split at the response because trl then puts the loss on the completion tokens
    including the turn's closing ``<|im_end|>``; the assistant mask of Qwen3-VL's training template leaves that
    token out, and a detector that never learns to stop rambles until max_new_tokens."""
    ds = load_split(name_or_path, config, split, max_rows)
    _require(ds, SFT_COLUMNS, "sft", name_or_path)
    ds = ds.select_columns(SFT_COLUMNS)
    return ds.map(_split_turns, input_columns=["messages"], remove_columns=["messages"], desc="prompt/completion")


def grpo_dataset(name_or_path: str, config: str | None = "grpo", split: str = "train", max_rows: int | None = None):
    """Prompt rows with the image and the ground truth the reward scores against."""
    ds = load_split(name_or_path, config, split, max_rows)
    _require(ds, GRPO_COLUMNS, "grpo", name_or_path)
    return ds.select_columns(GRPO_COLUMNS)
