"""Paths as a trust boundary: files a record points at, and files we name after ids.

A record's ``image_path`` is data, not a command: it may only name a file inside an allowed root (the records
file's folder, or the roots given with ``--image-root`` or ``$SDG_IMAGE_ROOT``); ``..`` out of it, an absolute
path elsewhere and a symlink leading out are refused. File names made from ids go through :func:`safe_filename`,
so an id such as ``../../x`` or ``/etc/x`` can never steer a write outside the output folder.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path


class PathError(ValueError):
    """A path that leaves its allowed roots, or names no file."""


IMAGE_ROOT_ENV = "SDG_IMAGE_ROOT"


def env_image_roots() -> list[str]:
    """Allowed image folders from ``$SDG_IMAGE_ROOT`` (``os.pathsep``-separated): a workspace sets its image store
    once instead of passing ``--image-root`` to every stage."""
    return [p for p in os.environ.get(IMAGE_ROOT_ENV, "").split(os.pathsep) if p]


class Resolver:
    """Resolve record paths inside allowed roots. Folder resolutions are cached: 30K files in a few folders cost a
    few ``realpath`` calls, not 30K."""

    def __init__(self, base: str | Path, roots: Sequence[str | Path] = ()):
        self.base = str(base)
        self.roots = [os.path.realpath(r) for r in (roots or env_image_roots() or [base])]
        self._dirs: dict[str, str] = {}

    def describe(self) -> str:
        return ", ".join(self.roots)

    def resolve(self, path: str, must_exist: bool = True) -> Path:
        """The real file behind ``path`` (relative to the base, or absolute); PathError unless it is a regular file
        inside one of the roots (with ``must_exist=False`` a missing file inside them is returned too)."""
        if not isinstance(path, str) or not path:
            raise PathError("must be a non-empty path")
        if "\x00" in path:
            raise PathError("contains a NUL byte")
        joined = os.path.join(self.base, path)  # an absolute path stays as it is
        folder, name = os.path.split(joined)
        if name in ("", ".", ".."):
            full = os.path.realpath(joined)
        else:
            real_folder = self._dirs.get(folder)
            if real_folder is None:
                real_folder = self._dirs[folder] = os.path.realpath(folder)
            full = os.path.join(real_folder, name)
            if os.path.islink(full):
                full = os.path.realpath(full)
        if not any(full == r or full.startswith(r.rstrip(os.sep) + os.sep) for r in self.roots):
            raise PathError(
                f"{path} resolves to {full}, outside the allowed image root ({self.describe()}); "
                f"pass --image-root (or set ${IMAGE_ROOT_ENV}) to allow another folder"
            )
        if not must_exist and not os.path.lexists(full):
            return Path(full)
        if not os.path.isfile(full):
            raise PathError(f"{full} does not exist" if not os.path.exists(full) else f"{full} is not a file")
        return Path(full)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str, max_len: int = 120) -> str:
    """A file name made from an id: letters, digits, ``.``, ``_`` and ``-`` only, no leading dot, bounded length.

    Ids that are already safe keep their name; any other id gets the cleaned name plus a short hash of the
    original, so two ids never share a file (``a/b`` and ``a_b`` differ)."""
    text = str(name)
    clean = _UNSAFE.sub("_", text).lstrip(".")
    if clean == text and 0 < len(clean) <= max_len:
        return clean
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{clean[: max_len - 13]}-{digest}" if clean else digest
