"""The train/test split rule, owned here: prompt-disjoint, by a salted hash of the normalised prompt.

A prompt's place is ``prompt_rank`` (its salted hash, a number in [0, 1)). ``sdg generate`` decides one prompt at a
time (each rank alone) and sends a prompt to test when its rank is below the test fraction; ``sdg build`` sees all
records at once and fills the test split with whole prompts in rank order until it holds the target number of
images. Both therefore put the same prompts first in line for test, and every image of a prompt (any generator,
seed or rank) lands on the same side.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Protocol


PAPER_TRAIN_IMAGES = 28_945
PAPER_TEST_IMAGES = 1_151
PAPER_TEST_FRACTION = PAPER_TEST_IMAGES / (PAPER_TRAIN_IMAGES + PAPER_TEST_IMAGES)
SPLITS: tuple[str, ...] = ("train", "test")


def prompt_key(text: str) -> str:
    """Prompts that differ only in case and spacing are the same prompt (and land in the same split)."""
    return " ".join(text.lower().split())


def prompt_rank(text: str, salt: str = "sdg") -> float:
    """The prompt's place in line for the test split, uniform in [0, 1)."""
    digest = hashlib.sha256(f"{salt}\x1f{prompt_key(text)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(text: str, test_fraction: float, salt: str = "sdg", given: str | None = None) -> str:
    """One prompt's split: ``given`` if the input fixes it, else test when its rank is below ``test_fraction``."""
    if given:
        return given
    return "test" if prompt_rank(text, salt) < test_fraction else "train"


class _HasSplit(Protocol):
    caption: str | None
    split: str | None


def assign_splits(
    records: Sequence[_HasSplit],
    test_fraction: float,
    test_images: int | None = None,
    salt: str = "sdg",
    keep_given: bool = True,
) -> dict[str, int]:
    """Give every record a split, whole prompts at a time, in rank order until the test split holds
    ``test_images`` (default ``test_fraction`` of all) images; with ``keep_given`` a split a prompt's records
    already carry wins (the most common one, if they disagree). Returns counts of what was decided how."""
    by_prompt: dict[str, list[_HasSplit]] = defaultdict(list)
    for r in records:
        by_prompt[prompt_key(r.caption or "")].append(r)
    fixed: dict[str, str] = {}
    conflicts = 0
    if keep_given:
        for key, group in by_prompt.items():
            given = Counter(r.split for r in group if r.split)
            if given:
                fixed[key] = given.most_common(1)[0][0]
                conflicts += int(len(given) > 1)
    free = sorted((k for k in by_prompt if k not in fixed), key=lambda k: prompt_rank(k, salt))
    target = test_images if test_images is not None else round(test_fraction * len(records))
    have = sum(len(by_prompt[k]) for k, s in fixed.items() if s == "test")
    for k in free:
        fixed[k] = "test" if have < target else "train"
        have += len(by_prompt[k]) if fixed[k] == "test" else 0
    for key, group in by_prompt.items():
        for r in group:
            r.split = fixed[key]
    return {
        "prompts": len(by_prompt),
        "prompts_with_given_split": len(by_prompt) - len(free),
        "split_conflicts_resolved": conflicts,
    }
