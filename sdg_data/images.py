"""Images as a trust boundary: every stage that opens a record's image goes through :func:`load_image`.

The file must lie inside an allowed root (:class:`~sdg_data.paths.Resolver`), be a PNG, JPEG or WebP whose header
declares at most ``max_pixels`` (a 20000x20000 header is a reject, never a decompression bomb), decode completely
(a truncated file is a reject) and, when the record states a size, have that size. What a stage stores or sends
is the exact bytes that were checked, so the file cannot change between the check and the use.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from sdg_data.paths import PathError, Resolver


MAX_PIXELS = 64 * 1024 * 1024  # 8192 x 8192; SDG images are 1-4 MP
FORMATS = ("PNG", "JPEG", "WEBP")


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

    def open(self) -> Image.Image:
        """The decoded image (decoded once, while checking; never reopens the file)."""
        if self.image is not None:
            return self.image
        im = Image.open(io.BytesIO(self.data))
        im.load()
        return im


def check_bytes(
    data: bytes,
    expect_size: tuple[int | None, int | None] = (None, None),
    max_pixels: int = MAX_PIXELS,
    path: Path | None = None,
) -> CheckedImage:
    """Verify image bytes: allowed format, pixel cap from the header, full decode, stated size."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=FORMATS)
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(f"image is {w}x{h}, over the {max_pixels:,}-pixel cap")
            im.load()  # decodes every pixel: a truncated or corrupt file fails here
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
    return CheckedImage(path, data, im.format or "?", w, h, im)


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
    try:
        data = full.read_bytes()
    except OSError as exc:
        raise ImageError(f"{full} cannot be read: {exc.strerror or exc}") from None
    return check_bytes(data, expect_size, max_pixels, full)
