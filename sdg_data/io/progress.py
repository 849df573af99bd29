"""Progress bars: one switch for every long job. A command's ``--progress/--no-progress`` turns its bar off, and so
does ``TQDM_DISABLE=1`` in the environment (``make demo`` and scripts), which tqdm itself ignores once a caller
passes ``disable``."""

from __future__ import annotations

import os
from typing import Any


def progress_bar(*, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar, off when ``enabled`` is false or ``TQDM_DISABLE`` is set to anything but 0."""
    from tqdm.auto import tqdm

    off = not enabled or os.environ.get("TQDM_DISABLE", "").lower() not in ("", "0", "false")
    return tqdm(disable=off, **kwargs)
