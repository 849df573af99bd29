"""Output that streams to disk while the build works, instead of all at its end.

Left alone, the kernel writes a new file's pages only once enough of them are dirty (10 % of memory by default)
or at ``sync``: during a build the disk idles while the CPUs check and encode, and then everything waits for the
disk. :class:`WriteBehind` hands each finished part of an output file to the disk at once. It is a hint
(``POSIX_FADV_DONTNEED``: Linux starts writing the dirty pages without waiting and lets go of the pages already
on disk): no memory of ours, nothing waits, and where the platform lacks it the build is the same, only slower to
reach the disk.
"""

from __future__ import annotations

import os
from pathlib import Path


class WriteBehind:
    """Starts writeback of what has been written to one file so far, at each :meth:`flush`.

    Letting go of the written pages also keeps a build larger than memory from pushing everything else out of the
    page cache, and (measured on a VM, where fresh guest memory is slow to hand out) lets the build reuse pages
    rather than take new ones. The cost: reading the shards right after a build comes from disk."""

    def __init__(self, path: str | Path):
        self.fd: int | None = None
        if hasattr(os, "posix_fadvise"):
            try:
                self.fd = os.open(path, os.O_RDONLY)
            except OSError:
                self.fd = None

    def flush(self) -> None:
        if self.fd is not None:
            try:
                os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
