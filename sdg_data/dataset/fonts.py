"""TrueType text for drawings (``sdg viz`` and anything that overlays boxes): DejaVu Sans (matplotlib ships it),
a CJK font where one is installed, word wrapping by pixel width, and a clear mark where a character has no glyph.

Pillow's default bitmap font draws non-ASCII letters as boxes and has one size; these fonts scale with the image.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from PIL import ImageFont


MISSING_MARK = "\u25a1"  # a white square: what a character no installed font can draw becomes
NO_FONT_NOTE = " [some characters need a font that is not installed]"
_CJK_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",
    "C:/Windows/Fonts/msyh.ttc",
)


@lru_cache(maxsize=1)
def main_font_path() -> str | None:
    """DejaVu Sans: matplotlib's copy, else the system's; None when neither is there (Pillow's default then)."""
    try:
        import matplotlib

        p = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        if p.is_file():
            return str(p)
    except ImportError:
        pass
    for p in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans.ttf"):
        if Path(p).is_file():
            return p
    return None


@lru_cache(maxsize=1)
def cjk_font_path() -> str | None:
    return next((p for p in _CJK_CANDIDATES if Path(p).is_file()), None)


@lru_cache(maxsize=4)
def _codepoints(path: str) -> frozenset[int] | None:
    """The characters a font file has glyphs for (None: unknown, assume all)."""
    try:
        from fontTools.ttLib import TTCollection, TTFont

        font = TTCollection(path, lazy=True).fonts[0] if path.endswith(".ttc") else TTFont(path, lazy=True)
        return frozenset(font.getBestCmap() or {})
    except Exception:  # noqa: BLE001 - no fontTools or an odd file: draw and hope
        return None


@lru_cache(maxsize=32)
def font(size: int, cjk: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = cjk_font_path() if cjk else main_font_path()
    if path is None:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(path, size=size)


def _covered(path: str | None, text: str) -> bool:
    if path is None:
        return False
    cps = _codepoints(path)
    return cps is None or all(ord(c) in cps or c.isspace() for c in text)


def pick(text: str, size: int) -> tuple[str, ImageFont.FreeTypeFont | ImageFont.ImageFont]:
    """The text as it will be drawn and the font to draw it with: the main font when it has every glyph, else a
    CJK font when one is installed and has them, else the main font with each missing character shown as a square
    and a note saying a font is missing."""
    main = main_font_path()
    if main is None or _covered(main, text):
        return text, font(size)
    cjk = cjk_font_path()
    if cjk is not None and _covered(cjk, text):
        return text, font(size, cjk=True)
    cps = _codepoints(main) or frozenset()
    shown = "".join(c if ord(c) in cps or c.isspace() else MISSING_MARK for c in text)
    return shown + NO_FONT_NOTE, font(size)


def wrap(text: str, fnt, max_width: float) -> list[str]:
    """Greedy wrap by pixel width: at spaces, and inside a word (or a run of CJK) that is wider than a line."""
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if fnt.getlength(candidate) <= max_width:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = ""
        for ch in word:  # a word longer than the line: break it
            if fnt.getlength(line + ch) > max_width and line:
                lines.append(line)
                line = ""
            line += ch
    if line or not lines:
        lines.append(line)
    return lines
