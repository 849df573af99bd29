"""Images as a trust boundary: every stage that opens a record's image goes through :func:`load_image`.

The file must lie inside an allowed root (:class:`~sdg_data.io.paths.Resolver`), be a PNG, JPEG or WebP whose header
declares at most ``max_pixels`` (a 20000x20000 header is a reject, never a decompression bomb), decode completely
(a truncated file is a reject) and, when the record states a size, have that size. What a stage stores or sends
is the exact bytes that were checked, so the file cannot change between the check and the use.

Checking that a file decodes is the expensive part. A PNG is checked by :mod:`sdg_data.io.png` (every chunk's CRC,
the zlib stream inflated to exactly the rows its header implies, every filter byte: what decides whether it
decodes, without rebuilding the pixels; 7-8 ms for a 1024 px PNG against Pillow's 17-19 ms); other formats, and PNGs
that check does not cover, are decoded in full. And a pipeline meets each image several times (distill, build,
viz, detect), so the SHA-256 of bytes that checked out is remembered, with their format and size, in a small
SQLite file (``$SDG_CACHE_DIR``, default ``~/.cache/sdg``; ``SDG_VERIFY_CACHE=0`` turns it off): the same bytes
are not checked twice, and a changed byte is a new digest, checked again. :func:`read_verified` goes one step
further for files, as git's index does: a file whose device, inode, size and modification time are those it had
when its bytes were verified is not hashed again either (its stat is taken before and after the read, so a file
changed meanwhile is checked in full, and a file modified less than two seconds before the read, which could
change again without its stat changing, is not remembered by its stat: git's "racily clean" rule).
"""

from __future__ import annotations

import atexit
import hashlib
import io
import os
import sqlite3
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from sdg_data.io import png
from sdg_data.io.paths import PathError, Resolver


MAX_PIXELS = 64 * 1024 * 1024  # 8192 x 8192; SDG images are 1-4 MP
FORMATS = ("PNG", "JPEG", "WEBP")
SMALL_IMAGE = 64 << 10  # bytes; smaller images are simply decoded each time (cheaper than the cache)


class ImageError(ValueError):
    """An image that may not or cannot be used; the message says why."""


@dataclass(frozen=True)
class CheckedImage:
    """A verified image: its real path, the bytes that were checked, format and size, and the decoded image."""

    path: Path | None
    data: bytes
    format: str
    width: int
    height: int
    image: Image.Image | None = field(default=None, repr=False, compare=False)
    digest: bytes = field(default=b"", repr=False, compare=False)  # SHA-256 of ``data``

    def open(self) -> Image.Image:
        """The decoded image (decoded once, while checking; never reopens the file)."""
        if self.image is not None:
            return self.image
        im = Image.open(io.BytesIO(self.data))
        im.load()
        return im


def _cache_on() -> bool:
    return os.environ.get("SDG_VERIFY_CACHE", "1") != "0"


class _VerifiedCache:
    """SHA-256 of image bytes that decoded completely -> (format, width, height), and file stat keys -> the digest
    of the bytes read then; shared by every stage through one SQLite file. New entries are written in batches (and
    at exit): one lost to a crash only means that image is decoded again."""

    BATCH = 512

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.db: sqlite3.Connection | None = None
        self.failed = False
        self.ok: dict[bytes, tuple[str, int, int]] = {}  # written since the last flush
        self.files: dict[str, bytes] = {}
        atexit.register(self.flush)

    def _open(self) -> sqlite3.Connection | None:
        if self.db is None and not self.failed:
            base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
            folder = Path(os.environ.get("SDG_CACHE_DIR") or Path(base) / "sdg")
            try:
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                if folder.is_symlink() or (folder.stat().st_mode & 0o022):  # shared or linked: not trusted
                    raise OSError(f"{folder} is a link or writable by others")
                db = sqlite3.connect(folder / "verified-images.sqlite3", check_same_thread=False, timeout=30)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("CREATE TABLE IF NOT EXISTS ok (digest BLOB PRIMARY KEY, format TEXT, w INT, h INT)")
                db.execute("CREATE TABLE IF NOT EXISTS files (stat TEXT PRIMARY KEY, digest BLOB)")
                db.commit()
                self.db = db
            except (OSError, sqlite3.Error):  # a read-only home: verify every time
                self.failed = True
        return self.db

    def _query(self, sql: str, args: tuple) -> tuple | None:
        db = self._open()
        if db is None:
            return None
        try:
            return db.execute(sql, args).fetchone()
        except sqlite3.Error:
            return None

    def get(self, digest: bytes) -> tuple[str, int, int] | None:
        if not _cache_on():
            return None
        with self.lock:
            if digest in self.ok:
                return self.ok[digest]
            row = self._query("SELECT format, w, h FROM ok WHERE digest = ?", (digest,))
            return (row[0], row[1], row[2]) if row else None

    def file_digest(self, key: str) -> bytes | None:
        """The digest a file had when its stat key was last recorded (only if those bytes verified)."""
        if not _cache_on():
            return None
        with self.lock:
            digest = self.files.get(key)
            if digest is None:
                row = self._query("SELECT digest FROM files WHERE stat = ?", (key,))
                digest = row[0] if row else None
            if digest is None:
                return None
            ok = digest in self.ok or self._query("SELECT 1 FROM ok WHERE digest = ?", (digest,))
            return digest if ok else None

    def put(self, digest: bytes, fmt: str, w: int, h: int) -> None:
        if _cache_on():
            with self.lock:
                self.ok[digest] = (fmt, w, h)
                self._maybe_flush()

    def put_file(self, key: str, digest: bytes) -> None:
        if _cache_on():
            with self.lock:
                self.files[key] = digest
                self._maybe_flush()

    def _maybe_flush(self) -> None:
        if len(self.ok) + len(self.files) >= self.BATCH:
            self._flush()

    def flush(self) -> None:
        with self.lock:
            self._flush()

    def _flush(self) -> None:
        if not (self.ok or self.files):
            return
        db = self._open()
        if db is not None:
            try:
                db.executemany("INSERT OR IGNORE INTO ok VALUES (?, ?, ?, ?)",
                               [(d, *v) for d, v in self.ok.items()])  # fmt: skip
                db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?)", list(self.files.items()))
                db.commit()
            except sqlite3.Error:
                pass
        self.ok.clear()
        self.files.clear()


VERIFIED = _VerifiedCache()


def check_bytes(
    data: bytes,
    expect_size: tuple[int | None, int | None] = (None, None),
    max_pixels: int = MAX_PIXELS,
    path: Path | None = None,
    pixels: bool = False,
) -> CheckedImage:
    """Verify image bytes: allowed format, pixel cap from the header, that they decode completely (or the same
    bytes' earlier check, by SHA-256), stated size. ``pixels``: the caller will need the pixels, so an image
    checked here is decoded in full once (kept in ``.image``) rather than checked and then decoded."""
    return _check(data, hashlib.sha256(data).digest(), expect_size, max_pixels, path, pixels)


def _check(
    data: bytes, digest: bytes, expect_size, max_pixels: int, path: Path | None, pixels: bool = False
) -> CheckedImage:
    small = len(data) < SMALL_IMAGE  # decoding it costs less than looking it up
    known = None if small else VERIFIED.get(digest)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=FORMATS)
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(f"image is {w}x{h}, over the {max_pixels:,}-pixel cap")
            decoded: Image.Image | None = None  # open() decodes on demand
            if known is None or tuple(known) != (im.format, w, h):
                if pixels or im.format != "PNG" or png.decodes(data) is not True:
                    im.load()  # decodes every pixel: a truncated or corrupt file fails here
                    decoded = im
                if not small:
                    VERIFIED.put(digest, im.format or "?", w, h)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(
            f"image header declares far over the {max_pixels:,}-pixel cap (a decompression bomb)"
        ) from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"not a {', '.join(FORMATS)} image") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"does not decode: {exc}") from None
    ew, eh = expect_size
    if (ew is not None and ew != w) or (eh is not None and eh != h):
        raise ImageError(f"is {w}x{h} but the record says {ew}x{eh}")
    return CheckedImage(path, data, im.format or "?", w, h, decoded, digest)


RACY_NS = 2_000_000_000  # a file modified this recently may change again without its stat changing


def _stat_key(path: Path) -> tuple[str, int]:
    """The file's identity for the cache (real path, device, inode, size, mtime, ctime), and its mtime. The ctime
    is set by the kernel on every write and cannot be set back (``touch -d`` restores an mtime, not a ctime), so a
    same-size rewrite that puts the old mtime back is still a changed file."""
    st = path.stat()
    key = f"{os.path.realpath(path)}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"
    return key, st.st_mtime_ns


def read_verified(
    path: Path,
    expect_size: tuple[int | None, int | None] = (None, None),
    max_pixels: int = MAX_PIXELS,
    pixels: bool = False,
) -> CheckedImage:
    """Read and verify an image file (already inside the allowed roots). A file unchanged since its bytes were
    verified (same stat before and after this read) skips the hash and the decode; anything else is checked in
    full. ImageError with the reason."""
    try:
        (before, mtime), read_at = _stat_key(path), time.time_ns()
        data = path.read_bytes()
        after, _ = _stat_key(path)
    except OSError as exc:
        raise ImageError(f"{path} cannot be read: {exc.strerror or exc}") from None
    small = len(data) < SMALL_IMAGE
    digest = VERIFIED.file_digest(before) if before == after and not small else None
    if digest is None:
        digest = hashlib.sha256(data).digest()
    checked = _check(data, digest, expect_size, max_pixels, path, pixels)
    # A file written within a timestamp tick of this read could be rewritten in the same tick, at the same size,
    # and keep this stat: such a "racily clean" file (git's term) is not remembered by its stat, only by its digest.
    if before == after and not small and mtime < read_at - RACY_NS:
        VERIFIED.put_file(after, digest)
    return checked


def load_image(
    path: str,
    resolver: Resolver,
    expect_size: tuple[int | None, int | None] = (None, None),
    max_pixels: int = MAX_PIXELS,
) -> CheckedImage:
    """Resolve ``path`` inside the allowed roots, read it once and verify it; ImageError with the reason."""
    try:
        full = resolver.resolve(path)
    except PathError as exc:
        raise ImageError(str(exc)) from None
    return read_verified(full, expect_size, max_pixels)


def data_url(
    image: str | Path | Image.Image, max_side: int | None = None, square: int | None = None, fmt: str = "jpeg"
) -> str:
    """An image (a path or a PIL image) as a base64 data URL for a model behind an API: shrunk so its longer side
    is at most ``max_side`` (the teacher, the detector), or resized to ``square`` x ``square`` (the BoxFlow
    detector reward, the paper's 512), encoded as JPEG (quality 90) or PNG. The one encoder every stage uses."""
    import base64
    from contextlib import nullcontext

    with Image.open(image) if isinstance(image, (str, Path)) else nullcontext(image) as src:
        im = src.convert("RGB")
        if square and im.size != (square, square):
            im = im.resize((square, square), Image.Resampling.BICUBIC)
        elif max_side and max(im.size) > max_side:
            im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="JPEG" if fmt == "jpeg" else "PNG", **({"quality": 90} if fmt == "jpeg" else {}))
    return f"data:image/{fmt};base64," + base64.b64encode(buf.getvalue()).decode()
