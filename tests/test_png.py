"""The fast PNG check (sdg_data/io/png.py) says yes only where Pillow's full decode does, and covers the usual PNGs."""

import io
import random
import struct
import zlib

import pytest
from PIL import Image

from sdg_data.io import images, png


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos + 8 <= len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        out.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]))
        pos += 12 + n
    return out


def _join(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return png.SIGNATURE + b"".join(_chunk(k, b) for k, b in chunks)


def _saved(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _samples(rng: random.Random) -> list[bytes]:
    """PNGs of every colour type and depth Pillow writes, odd sizes, split IDATs, text chunks, from noise."""
    out = []
    for mode in ("RGB", "RGBA", "L", "LA", "P", "1", "I;16"):
        for w, h in ((1, 1), (7, 3), (33, 17)):
            raw = rng.randbytes(w * h * 4)
            im = Image.frombytes("RGBA", (w, h), raw).convert(mode if mode != "I;16" else "I").convert(mode) \
                if mode != "1" else Image.frombytes("L", (w, h), raw[: w * h]).convert("1")  # fmt: skip
            out.append(_saved(im))
    noisy = Image.frombytes("RGB", (40, 30), rng.randbytes(40 * 30 * 3))
    out.append(_saved(noisy, compress_level=0))
    out.append(_saved(noisy, compress_level=9, optimize=True))
    split = _chunks(_saved(noisy))  # the image data over three IDAT chunks, and a tEXt before it
    data = next(b for k, b in split if k == b"IDAT")
    third = len(data) // 3
    parts = [data[:third], data[third : 2 * third], data[2 * third :]]
    out.append(_join([split[0], (b"tEXt", b"Comment\0made here")] + [(b"IDAT", p) for p in parts] + [(b"IEND", b"")]))
    return out


def _decodes_in_pillow(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            im.load()
        return True
    except Exception:
        return False


def _damaged(data: bytes, rng: random.Random) -> bytes:
    """One of the ways a PNG goes wrong: bytes flipped (CRCs fixed up or not), cut short, chunks lost, duplicated
    or reordered, a header that lies, image data re-compressed from too few, too many or badly filtered rows."""
    chunks = _chunks(data)
    kind = rng.randrange(9)
    if kind == 0:  # flipped bytes anywhere, CRCs as they are
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(8, len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)
    if kind == 1:  # flipped bytes inside a chunk, its CRC recomputed (what a careful attacker sends)
        i = rng.randrange(len(chunks))
        k, body = chunks[i]
        if body:
            b = bytearray(body)
            for _ in range(rng.randint(1, 3)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            chunks[i] = (k, bytes(b))
        return _join(chunks)
    if kind == 2:  # cut short
        return data[: rng.randrange(8, len(data))]
    if kind == 3:  # a chunk lost or doubled
        i = rng.randrange(len(chunks))
        return _join(chunks[:i] + chunks[i + 1 :] if rng.random() < 0.5 else chunks[: i + 1] + chunks[i:])
    if kind == 4:  # two chunks swapped
        i, j = rng.randrange(len(chunks)), rng.randrange(len(chunks))
        chunks[i], chunks[j] = chunks[j], chunks[i]
        return _join(chunks)
    ihdr = chunks[0][1]
    w, h, depth, color, comp, filt, inter = struct.unpack(">IIBBBBB", ihdr)
    idat = b"".join(b for k, b in chunks if k == b"IDAT")
    rows = zlib.decompress(idat)
    rest = [c for c in chunks if c[0] not in (b"IHDR", b"IDAT", b"IEND")]
    if kind == 5:  # the header lies about the size, depth or colour type
        field = rng.randrange(4)
        w, h = (w + rng.choice((-1, 1)) or 2, h) if field == 0 else (w, h + rng.choice((-1, 1)) or 2)
        if field == 2:
            depth = rng.choice((1, 2, 4, 8, 16))
        if field == 3:
            color = rng.choice((0, 2, 3, 4, 6))
        new = struct.pack(">IIBBBBB", w, h, depth, color, comp, filt, inter)
        return _join([(b"IHDR", new)] + rest + [(b"IDAT", idat), (b"IEND", b"")])
    if kind == 6:  # rows lost or added before compressing
        cut = rng.randint(-len(rows) // 2, len(rows) // 2) or 1
        body = rows[:cut] if cut < 0 else rows + rows[:cut]
        return _join([chunks[0]] + rest + [(b"IDAT", zlib.compress(body)), (b"IEND", b"")])
    if kind == 7:  # a filter byte out of range
        b = bytearray(rows)
        b[0] = rng.randint(5, 255)
        return _join([chunks[0]] + rest + [(b"IDAT", zlib.compress(bytes(b))), (b"IEND", b"")])
    # kind 8: the zlib stream's Adler-32 or end broken, or junk after it
    z = bytearray(zlib.compress(rows))
    choice = rng.randrange(3)
    if choice == 0:
        z[-1] ^= 0xFF
    elif choice == 1:
        z = z[:-4]
    else:
        z += b"junk"
    return _join([chunks[0]] + rest + [(b"IDAT", bytes(z)), (b"IEND", b"")])


def test_every_png_a_writer_makes_is_checked_without_a_full_decode():
    for data in _samples(random.Random(0)):
        assert png.decodes(data) is True, Image.open(io.BytesIO(data)).mode


def test_the_fast_check_never_says_yes_where_pillow_says_no():
    rng = random.Random(1)
    samples = _samples(rng)
    yes = no = 0
    for n in range(3000):
        data = _damaged(samples[n % len(samples)], rng)
        verdict = png.decodes(data)
        assert verdict in (True, None)
        if verdict:
            assert _decodes_in_pillow(data), f"case {n}: the fast check passed a PNG Pillow cannot decode"
            yes += 1
        else:
            no += 1
    assert yes > 100 and no > 1500  # both sides were exercised (harmless damage, e.g. a lost tEXt, stays a yes)


def test_kinds_left_to_the_full_decode():
    noisy = Image.frombytes("RGB", (16, 16), random.Random(2).randbytes(16 * 16 * 3))
    frames = [noisy, noisy.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    animated = io.BytesIO()
    frames[0].save(animated, format="PNG", save_all=True, append_images=frames[1:])
    chunks = _chunks(_saved(noisy))
    after = _join(chunks[:-1] + [(b"tEXt", b"Comment\0after the pixels"), chunks[-1]])
    for data in (animated.getvalue(), after):
        assert png.decodes(data) is None  # not covered: the caller decodes in full
        assert images.check_bytes(data).width == 16  # and the full decode accepts them
    other = struct.pack(">IIBBBBB", 8, 32, 8, 2, 0, 0, 0)  # a second header, another size, before the pixels
    assert png.decodes(_join(chunks[:1] + [(b"IHDR", other)] + chunks[1:])) is None
    ihdr = bytearray(chunks[0][1])
    ihdr[12] = 1  # Adam7 interlacing is left to the full decode too (which refuses these rows)
    interlaced = _join([(b"IHDR", bytes(ihdr))] + chunks[1:])
    assert png.decodes(interlaced) is None
    with pytest.raises(images.ImageError, match="does not decode"):
        images.check_bytes(interlaced)


def test_a_stage_that_needs_the_pixels_decodes_once(monkeypatch):
    from PIL import ImageFile

    monkeypatch.setenv("SDG_VERIFY_CACHE", "0")
    data = _saved(Image.frombytes("RGB", (300, 300), random.Random(3).randbytes(300 * 300 * 3)))
    loads, checks = [], []
    real_load, real_png = ImageFile.ImageFile.load, png.decodes
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: loads.append(1) or real_load(im))
    monkeypatch.setattr(png, "decodes", lambda d: checks.append(1) or real_png(d))
    stored = images.check_bytes(data)  # build: checked, not decoded
    assert stored.image is None and (len(checks), len(loads)) == (1, 0)
    drawn = images.check_bytes(data, pixels=True)  # viz, detect, distill's teacher: one full decode, kept
    assert drawn.image is not None and (len(checks), len(loads)) == (1, 1)
    assert drawn.open() is drawn.image and stored.open().tobytes() == drawn.image.tobytes()
