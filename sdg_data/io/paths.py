"""Paths as a trust boundary: files a record points at, and files we name after ids.

A record's ``image_path`` is data, not a command: it may only name a file inside an allowed root (the records
file's folder, or the roots given with ``--image-root`` or ``$SDG_IMAGE_ROOT``); ``..`` out of it, an absolute
path elsewhere and a symlink leading out are refused.

Roots travel between stages: a stage that writes records pointing at images it verified (distill, pull, the
importers) vouches for the roots that hold those images in its summary, with an HMAC under a key private to the
user (:func:`vouch`) over the records file's path and content and each root's path and identity (device, inode).
The next stage, given no ``--image-root``, also allows the roots vouched for its input (:func:`vouched_roots`), so
``distill -> build`` runs on defaults. A summary written elsewhere or edited, a records file moved or edited, a
root replaced by another folder or by a link, or a key that is missing, linked, shared or short vouches for
nothing. What a vouch does not cover: files inside a vouched root may change after the vouch (each image is
checked again where it is read), and anyone who can write the user's key can forge one.

File names made from ids go through :func:`safe_filename`,
so an id such as ``../../x`` or ``/etc/x`` can never steer a write outside the output folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path


class PathError(ValueError):
    """A path that leaves its allowed roots, or names no file."""


IMAGE_ROOT_ENV = "SDG_IMAGE_ROOT"


def env_image_roots() -> list[str]:
    """Allowed image folders from ``$SDG_IMAGE_ROOT`` (``os.pathsep``-separated): a workspace sets its image store
    once instead of passing ``--image-root`` to every stage."""
    return [p for p in os.environ.get(IMAGE_ROOT_ENV, "").split(os.pathsep) if p]


KEY_BYTES = 32
_WARNED: set[str] = set()


def _warn(message: str) -> None:
    """One line on stderr, once per process and message: a missing vouch is worth a word, not a crash."""
    if message in _WARNED:
        return
    _WARNED.add(message)
    import sys

    print(f"warning: {message}", file=sys.stderr)


def key_path() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sdg" / "provenance.key"


def _usable_key(path: Path) -> bytes | None:
    """The key at ``path`` if it is one we may trust: a regular file reached without a link, owned by this user,
    readable by nobody else, exactly ``KEY_BYTES`` long. Raises FileNotFoundError when there is none."""
    import stat

    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        _warn(f"provenance key {path} cannot be opened ({exc.strerror or exc}; a link is never followed): no folder "
              "is vouched for, so later stages need --image-root")  # fmt: skip
        return None
    try:
        st = os.fstat(fd)
        why = (
            "is not a regular file" if not stat.S_ISREG(st.st_mode)
            else "has other hard links" if st.st_nlink != 1
            else "is not owned by you" if hasattr(os, "getuid") and st.st_uid != os.getuid()
            else f"is readable by others (mode {stat.S_IMODE(st.st_mode):o}; chmod 600 it)" if st.st_mode & 0o077
            else f"is {st.st_size} bytes, not {KEY_BYTES}" if st.st_size != KEY_BYTES
            else None
        )  # fmt: skip
        key = os.read(fd, KEY_BYTES + 1) if why is None else b""
    finally:
        os.close(fd)
    if why is None and len(key) != KEY_BYTES:
        why = f"holds {len(key)} bytes, not {KEY_BYTES}"
    if why is None and len(set(key)) < 8:  # all zeros, or a few repeated bytes: not random, guessable
        why = "is not random (too few distinct bytes)"
    if why is None:
        folder = os.lstat(path.parent)
        if stat.S_ISLNK(folder.st_mode) or folder.st_mode & 0o022:
            why = f"lies in {path.parent}, which is a link or writable by others"
    if why:
        _warn(f"provenance key {path} {why}: it is not used, no folder is vouched for (remove it to make a new one)")
        return None
    return key


def _key() -> bytes | None:
    """This user's provenance key (``KEY_BYTES`` random bytes in ``$XDG_CACHE_HOME/sdg/provenance.key``, private to
    the user): what makes a vouch unforgeable by a file that arrived with the data. Made on first use whole, then
    linked into place, so several processes starting at once all read the one key that won and a crash never
    leaves an empty key. None (with a warning) when no usable key can be had: no vouch, never a crash."""
    try:
        path = key_path()
    except (RuntimeError, KeyError, OSError) as exc:  # no HOME and no passwd entry
        _warn(f"no provenance key: no home folder ({exc}); no folder is vouched for (later stages need --image-root)")
        return None
    for _ in range(3):
        try:
            return _usable_key(path)
        except FileNotFoundError:
            pass
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(prefix=".provenance.", suffix=".tmp", dir=path.parent)
        except OSError as exc:
            _warn(f"no provenance key can be made in {path.parent} ({exc.strerror or exc}): no folder is vouched "
                  "for, so later stages need --image-root")  # fmt: skip
            return None
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)  # whole or absent; another process's key wins the race
        except FileExistsError:
            pass
        except OSError as exc:
            _warn(f"no provenance key can be made at {path} ({exc.strerror or exc}): no folder is vouched for")
            return None
        finally:
            Path(tmp).unlink(missing_ok=True)
    return None


def _mac(key: bytes, records: str | Path, digest: str, roots: Sequence[str], ids: Sequence[Sequence[int]]) -> str:
    import hmac

    parts = [os.path.realpath(records), digest, *roots, *(f"{d}:{i}" for d, i in ids)]
    return hmac.new(key, "\0".join(parts).encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def _folder_mac(key: bytes, folder: str, folder_id: Sequence[int], roots: Sequence[str], ids: Sequence[Sequence[int]]):
    import hmac

    parts = ["folder", folder, f"{folder_id[0]}:{folder_id[1]}", *roots, *(f"{d}:{i}" for d, i in ids)]
    return hmac.new(key, "\0".join(parts).encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def _identity(path: str) -> list[int] | None:
    """[device, inode] of a folder reached without a link on its last step, or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_dev, st.st_ino] if os.path.isdir(path) and os.path.realpath(path) == path else None


_DIGESTS: dict[tuple, str] = {}


def _digest(path: str | Path) -> str | None:
    """The records file's SHA-256, once per version of the file in this process: a stage resolves its input's
    roots several times (screening, then each file a record names), and a 30K-line file is not hashed each time."""
    from sdg_data.io.sidecar import file_digest

    try:
        st = os.stat(path)
        key = (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key not in _DIGESTS:
            _DIGESTS[key] = file_digest(Path(path))
        return _DIGESTS[key]
    except OSError:
        return None


def _roots_in_use(records: Path, roots: Sequence[str]) -> list[str]:
    """The roots under which the records' image paths lie (a stage vouches only for folders it checked images
    under, never for a root it was merely given)."""
    import orjson

    resolver = Resolver(records.parent, roots)
    used: set[str] = set()
    with records.open("rb") as f:  # the file this stage just wrote (a line a record)
        for raw in f:
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            path = obj.get("image_path") if isinstance(obj, dict) else None
            if not isinstance(path, str):
                continue
            try:
                full = str(resolver.resolve(path))
            except PathError:
                continue
            used.update(r for r in resolver.roots if full.startswith(r.rstrip(os.sep) + os.sep))
            if len(used) == len(resolver.roots):
                break
    return [r for r in resolver.roots if r in used]


def vouch(records: str | Path, roots: Sequence[str | Path]) -> dict[str, object]:
    """The summary fields by which a stage vouches that ``records``' image paths lie in ``roots``: only the roots
    that hold at least one of its images, each bound by its identity (device and inode: a folder later replaced,
    by another or by a link, vouches for nothing), and the records file's content (an edited copy vouches for
    nothing). {} with a warning when there is no usable key."""
    records = Path(records)
    key = _key()
    digest = _digest(records)
    if key is None or digest is None:
        return {}
    real = _roots_in_use(records, [os.path.realpath(r) for r in roots])
    ids = []
    for r in real:
        st = os.stat(r)
        ids.append([st.st_dev, st.st_ino])
    folder = os.path.realpath(records.parent)
    fid = _identity(folder) or [0, 0]
    return {"image_roots": real, "image_roots_id": ids, "records_sha256": digest,
            "image_roots_mac": _mac(key, records, digest, real, ids),
            # the user's own files derived in this folder (a grep, a jq filter) keep these roots too
            "image_roots_folder": folder, "image_roots_folder_id": fid,
            "image_roots_folder_mac": _folder_mac(key, folder, fid, real, ids)}  # fmt: skip


def vouched_roots(records: str | Path) -> list[str]:
    """The image roots a stage on this machine vouched for ``records`` (in a ``*.summary.json`` beside it), or []:
    the summary is read only as a regular file; its MAC must hold for this records file's path and content, or its
    folder MAC for the folder the records file is in (the same folder, by path and identity: a file the user
    derived there, a ``grep`` or ``jq`` of the stage's output, keeps the roots; a copy of the folder elsewhere does
    not); and each root must still be the folder it was (same path without a link, same device and inode)."""

    from sdg_data.io.sidecar import read_json_object, regular_entries

    records = Path(records)
    key = None
    digest: str | None = None
    for summary in regular_entries(records.parent, "*.summary.json"):
        got = read_json_object(summary)
        if not got or not isinstance(got.get("image_roots_mac"), str):
            continue
        roots, ids, want = got.get("image_roots"), got.get("image_roots_id"), got.get("records_sha256")
        if not (
            isinstance(roots, list)
            and all(isinstance(r, str) for r in roots)
            and isinstance(want, str)
            and isinstance(ids, list)
            and len(ids) == len(roots)
            and all(isinstance(i, list) and len(i) == 2 and all(type(v) is int for v in i) for i in ids)
        ):
            continue  # fmt: skip
        key = key if key is not None else _key()
        if key is None:
            return []
        if _file_vouch(key, got, records, want, roots, ids):
            digest = digest if digest is not None else _digest(records)
            if digest != want and not _folder_vouch(key, got, records, roots, ids):
                continue  # the stage's file, edited: only its folder's vouch can still hold
        elif not _folder_vouch(key, got, records, roots, ids):
            continue
        ok = []
        for r, (dev, ino) in zip(roots, ids, strict=True):
            try:
                st = os.stat(r)
            except OSError:
                continue
            if os.path.realpath(r) == r and (st.st_dev, st.st_ino) == (dev, ino) and os.path.isdir(r):
                ok.append(r)
        return ok
    return []


def _file_vouch(key: bytes, got: dict, records: Path, want: str, roots: list, ids: list) -> bool:
    import hmac

    return hmac.compare_digest(got["image_roots_mac"], _mac(key, records, want, roots, ids))


def _folder_vouch(key: bytes, got: dict, records: Path, roots: list, ids: list) -> bool:
    """Whether the summary vouches for the folder ``records`` is in: the same folder (path and identity) as the
    stage wrote into, under this user's key."""
    import hmac

    folder, fid, mac = (
        got.get("image_roots_folder"),
        got.get("image_roots_folder_id"),
        got.get("image_roots_folder_mac"),
    )
    here = os.path.realpath(records.parent)
    if (
        not (isinstance(folder, str) and isinstance(mac, str) and isinstance(fid, list) and len(fid) == 2)
        or folder != here
    ):
        return False
    if _identity(here) != fid:
        return False
    return hmac.compare_digest(mac, _folder_mac(key, folder, fid, roots, ids))


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
