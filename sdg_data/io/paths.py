"""Paths as a trust boundary: files a record points at, and files we name after ids.

A record's ``image_path`` is data, not a command: it may only name a file inside an allowed root (the records
file's folder, or the roots given with ``--image-root`` or ``$SDG_IMAGE_ROOT``); ``..`` out of it, an absolute
path elsewhere and a symlink leading out are refused.

Roots travel between stages: a stage that writes records pointing at images it verified (distill, pull, the
importers) vouches for its roots in its summary, bound to that records file by an HMAC with a key kept in the
user's cache (:func:`vouch`). The next stage, given no ``--image-root``, also allows the roots vouched for its input
(:func:`vouched_roots`), so ``distill -> build`` runs on defaults; a summary written elsewhere, or edited, or a
records file moved, vouches for nothing. File names made from ids go through :func:`safe_filename`,
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


def _key() -> bytes:
    """This user's provenance key (32 random bytes in ``$XDG_CACHE_HOME/sdg/provenance.key``, created on first
    use, readable by the user alone): what makes a vouch unforgeable by a file that arrived with the data."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sdg"
    path = cache / "provenance.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        cache.mkdir(parents=True, exist_ok=True)
        key = os.urandom(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key
    except FileExistsError:  # pragma: no cover - another process made it between the read and the create
        return path.read_bytes()


def _mac(records: str | Path, roots: Sequence[str]) -> str:
    import hmac

    msg = "\0".join([os.path.realpath(records), *roots]).encode("utf-8", "surrogateescape")
    return hmac.new(_key(), msg, hashlib.sha256).hexdigest()


def vouch(records: str | Path, roots: Sequence[str | Path]) -> dict[str, object]:
    """The summary fields by which a stage vouches that ``records``' image paths lie in ``roots`` (checked by it)."""
    real = [os.path.realpath(r) for r in roots]
    return {"image_roots": real, "image_roots_mac": _mac(records, real)}


def vouched_roots(records: str | Path) -> list[str]:
    """The image roots a stage on this machine vouched for ``records`` (in a ``*.summary.json`` beside it), or []."""
    import hmac
    import json

    records = Path(records)
    for summary in sorted(records.parent.glob("*.summary.json")):
        try:
            got = json.loads(summary.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        roots, mac = (got.get("image_roots"), got.get("image_roots_mac")) if isinstance(got, dict) else (None, None)
        if isinstance(roots, list) and all(isinstance(r, str) for r in roots) and isinstance(mac, str):
            if hmac.compare_digest(mac, _mac(records, roots)):
                return [r for r in roots if os.path.isdir(r)]
    return []


class Resolver:
    """Resolve record paths inside allowed roots. Folder resolutions are cached: 30K files in a few folders cost a
    few ``realpath`` calls, not 30K."""

    def __init__(self, base: str | Path, roots: Sequence[str | Path] = ()):
        self.base = str(base)
        self.roots = [os.path.realpath(r) for r in (roots or env_image_roots() or [base])]
        self._dirs: dict[str, str] = {}

    @classmethod
    def for_records(cls, records: str | Path, roots: Sequence[str | Path] = ()) -> Resolver:
        """The resolver for a records file's image paths: the given roots (or ``$SDG_IMAGE_ROOT``), else the file's
        folder plus the roots the stage that wrote it vouched for."""
        records = Path(records)
        if roots or env_image_roots():
            return cls(records.parent, roots)
        return cls(records.parent, [records.parent, *vouched_roots(records)])

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
