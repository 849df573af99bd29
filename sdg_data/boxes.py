"""The one box type of the project and every coordinate conversion it needs.

A :class:`Box` stores ``x0, y0, x1, y1`` as floats on the 0-1000 normalized grid of the SDG answer format
(``box_2d``), top-left origin, x to the right, y down. That unit is the one every scorer and the model use, integer
grid boxes stay exact in it (so IoU thresholds are hit exactly), and it needs no image size. Conversions to and
from pixels, Label Studio percent and the yxyx order are named methods here; no other module does coordinate
arithmetic.

>>> b = Box.from_pixels([256, 0, 512, 1024], width=1024, height=1024)
>>> b.to_grid()
[250, 0, 500, 1000]
>>> b.to_grid(order="yxyx")
[0, 250, 1000, 500]
>>> Box.from_label_studio(x=25.0, y=0.0, width=25.0, height=100.0) == b
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np


GRID = 1000
"""Side of the normalized grid used by ``box_2d`` (Qwen-VL and Gemini convention)."""

BoxOrder = Literal["xyxy", "yxyx"]
BOX_ORDERS: tuple[str, ...] = ("xyxy", "yxyx")


class BoxError(ValueError):
    """A box that cannot be built or is unusable (wrong length, not numeric, inverted, empty)."""


def _check_order(order: str) -> None:
    if order not in BOX_ORDERS:
        raise BoxError(f"box order must be one of {BOX_ORDERS}, got {order!r}")


def _four_numbers(coords: Sequence[float], what: str) -> tuple[float, float, float, float]:
    if type(coords) is list and len(coords) == 4:  # nearly always: four plain numbers read from JSON
        a, b, c, d = coords
        ta, tb, tc, td = type(a), type(b), type(c), type(d)
        if (
            (ta is int or ta is float)
            and (tb is int or tb is float)
            and (tc is int or tc is float)
            and (td is int or td is float)
        ):
            try:
                out = (float(a), float(b), float(c), float(d))
            except OverflowError:
                pass  # the general path says which
            else:
                if all(map(math.isfinite, out)):
                    return out
    if isinstance(coords, (str, bytes)) or not isinstance(coords, Sequence) and not isinstance(coords, np.ndarray):
        raise BoxError(f"{what} must be a list of 4 numbers, got {type(coords).__name__}")
    if len(coords) != 4:
        raise BoxError(f"{what} must have 4 numbers, got {len(coords)}")
    out = []
    for v in coords:
        t = type(v)  # plain int or float, nearly always: two identity tests before the general checks
        if t is not float and t is not int and (t is bool or not isinstance(v, (int, float, np.integer, np.floating))):
            raise BoxError(f"{what} must hold numbers, got {v!r}")
        try:
            f = float(v)
        except OverflowError:  # an integer of hundreds of digits
            raise BoxError(f"{what} holds a number too large to be a coordinate") from None
        if not math.isfinite(f):
            raise BoxError(f"{what} holds a non-finite value {v!r}")
        out.append(f)
    return out[0], out[1], out[2], out[3]


def label_studio_problem(x: float, y: float, width: float, height: float, eps: float = 1e-6) -> str | None:
    """Why a Label Studio rectangle (percent of the image) is unusable, or None: empty, or outside the image by
    more than the editor's rounding (1e-3 %)."""
    if width <= eps or height <= eps:
        return f"box has zero area ({width:.3g}% x {height:.3g}%)"
    if x < -eps or y < -eps or x + width > 100 + 1e-3 or y + height > 100 + 1e-3:
        return f"box ({x:.3g}, {y:.3g}, {width:.3g}, {height:.3g})% is outside the image"
    return None


def normalized_problem(coords: Sequence[float]) -> str | None:
    """Why four grid coordinates look like a 0-1 normalised box, or None.

    A box whose every coordinate is within 0-1 with a fraction among them is almost surely normalised (on the
    0-1000 grid it would be under a thousandth of the image); reading it as grid units would silently turn it
    into a speck at the corner, so it is an error that says so instead."""
    if max(coords) <= 1.0 and min(coords) >= 0.0 and any(v != int(v) for v in coords):
        return (
            f"{list(coords)} looks normalised to 0-1; box_2d is on the 0-{GRID} grid "
            f"(multiply by {GRID}, or convert pixels with the image size)"
        )
    return None


def _ordered(a: int, b: int) -> tuple[int, int]:
    """``a < b`` on the grid: swap crossed ends, widen a collapsed pair by one unit inside 0-1000."""
    if a > b:
        a, b = b, a
    if a == b:
        return (a, a + 1) if a < GRID else (a - 1, a)
    return a, b


class Box(NamedTuple):
    """An axis-aligned box on the 0-1000 grid, xyxy, floats. Build it with the ``from_*`` constructors.

    Immutable (a named tuple: three times cheaper to create than a frozen dataclass, which matters on the
    reward's hot path); ``x0, y0, x1, y1 = box`` unpacks it.
    """

    x0: float
    y0: float
    x1: float
    y1: float

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_grid(cls, coords: Sequence[float], order: BoxOrder = "xyxy") -> Box:
        """From a ``box_2d`` on the 0-1000 grid in ``order`` (SDG answers: xyxy; Gemini and the SFT card: yxyx)."""
        _check_order(order)
        a, b, c, d = _four_numbers(coords, "box_2d")
        why = normalized_problem((a, b, c, d))
        if why:
            raise BoxError(f"box_2d {why}")
        return cls(a, b, c, d) if order == "xyxy" else cls(b, a, d, c)

    @classmethod
    def from_pixels(cls, coords: Sequence[float], width: int, height: int, order: BoxOrder = "xyxy") -> Box:
        """From pixel corners on an image of ``width`` x ``height``."""
        _check_order(order)
        if width <= 0 or height <= 0:
            raise BoxError(f"image size must be positive, got {width}x{height}")
        a, b, c, d = _four_numbers(coords, "pixel box")
        x0, y0, x1, y1 = (a, b, c, d) if order == "xyxy" else (b, a, d, c)
        sx, sy = GRID / width, GRID / height
        return cls(x0 * sx, y0 * sy, x1 * sx, y1 * sy)

    @classmethod
    def from_label_studio(cls, x: float, y: float, width: float, height: float, clamp: bool = False) -> Box:
        """From a Label Studio rectangle value: top-left corner and size, in percent of the image. ``clamp`` cuts
        a rectangle that the editor let stray a hair past an edge back to the image (after
        :func:`label_studio_problem` has accepted it)."""
        x0, y0, w, h = _four_numbers([x, y, width, height], "Label Studio rectangle")
        if clamp:
            x0c, y0c = min(max(x0, 0.0), 100.0), min(max(y0, 0.0), 100.0)
            w, h = min(w, 100.0 - x0c), min(h, 100.0 - y0c)
            x0, y0 = x0c, y0c
        k = GRID / 100.0
        return cls(x0 * k, y0 * k, (x0 + w) * k, (y0 + h) * k)

    # ----------------------------------------------------------------- conversions
    def to_grid(self, order: BoxOrder = "xyxy") -> list[int]:
        """Integer ``box_2d`` on the 0-1000 grid (round half up), in ``order``."""
        _check_order(order)
        x0, y0, x1, y1 = (int(math.floor(v + 0.5)) for v in (self.x0, self.y0, self.x1, self.y1))
        return [x0, y0, x1, y1] if order == "xyxy" else [y0, x0, y1, x1]

    def to_pixels(self, width: int, height: int, order: BoxOrder = "xyxy") -> list[float]:
        """Pixel corners on an image of ``width`` x ``height`` (floats; round at the call that needs integers)."""
        _check_order(order)
        sx, sy = width / GRID, height / GRID
        x0, y0, x1, y1 = self.x0 * sx, self.y0 * sy, self.x1 * sx, self.y1 * sy
        return [x0, y0, x1, y1] if order == "xyxy" else [y0, x0, y1, x1]

    @classmethod
    def from_coco(cls, bbox: Sequence[float], width: int, height: int) -> Box:
        """From a COCO ``bbox`` ``[x, y, w, h]`` in pixels on a ``width`` x ``height`` image."""
        x, y, bw, bh = _four_numbers(bbox, "bbox")
        return cls.from_pixels([x, y, x + bw, y + bh], width, height)

    def to_coco(self, width: int, height: int) -> list[float]:
        """COCO ``bbox`` ``[x, y, w, h]`` in pixels on a ``width`` x ``height`` image."""
        x0, y0, x1, y1 = self.to_pixels(width, height)
        return [x0, y0, x1 - x0, y1 - y0]

    def to_label_studio(self) -> dict[str, float]:
        """Label Studio rectangle value ``{x, y, width, height}`` in percent of the image."""
        k = 100.0 / GRID
        return {
            "x": self.x0 * k,
            "y": self.y0 * k,
            "width": (self.x1 - self.x0) * k,
            "height": (self.y1 - self.y0) * k,
        }

    # ----------------------------------------------------------------- geometry
    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def area_share(self) -> float:
        """The share of the image the box covers (0-1)."""
        return self.area / (GRID * GRID)

    def center_share(self) -> tuple[float, float]:
        """The box centre as a share of the image width and height (0-1), e.g. to name its region in words."""
        return (self.x0 + self.x1) / (2 * GRID), (self.y0 + self.y1) / (2 * GRID)

    def clamp(self) -> Box:
        """The box cut to the image (0..1000 on both axes)."""
        return Box(*(min(float(GRID), max(0.0, v)) for v in (self.x0, self.y0, self.x1, self.y1)))

    def shifted(self, offsets: Sequence[int]) -> Box:
        """The grid box moved by integer ``(dx0, dy0, dx1, dy1)``, clamped to 0-1000, kept at least 1 unit wide
        and tall (coordinate jitter). The box is first snapped to the integer grid, as the answer stores it."""
        x0, y0, x1, y1 = (v + int(d) for v, d in zip(self.to_grid(), offsets))
        x0, y0, x1, y1 = (min(GRID, max(0, v)) for v in (x0, y0, x1, y1))
        x0, x1 = _ordered(x0, x1)
        y0, y1 = _ordered(y0, y1)
        return Box(float(x0), float(y0), float(x1), float(y1))

    def is_inside(self) -> bool:
        return 0.0 <= self.x0 and 0.0 <= self.y0 and self.x1 <= GRID and self.y1 <= GRID

    def problem(self, min_side: float = 0.0) -> str | None:
        """Why the box is unusable, or None: inverted, zero area, thinner than ``min_side`` grid units, outside."""
        x0, y0, x1, y1 = self
        if (
            x0 < x1
            and y0 < y1
            and x1 - x0 >= min_side
            and y1 - y0 >= min_side
            and 0.0 <= x0
            and 0.0 <= y0
            and (x1 <= GRID and y1 <= GRID)
        ):
            return None  # the common case, in one expression (every record read checks every box)
        if x0 > x1 or y0 > y1:
            return f"inverted box {self.to_grid()} (needs x0 < x1 and y0 < y1)"
        if x0 == x1 or y0 == y1:
            return f"zero-area box {self.to_grid()}"
        if min(self.width, self.height) < min_side:
            return f"box {self.to_grid()} is thinner than {min_side} grid units"
        if not self.is_inside():
            return f"box {self.to_grid()} lies outside the image (0-{GRID})"
        return None

    def grid_cells(self, rows: int, cols: int, keep_thin: bool = False) -> tuple[int, int, int, int]:
        """The cells ``(r0, r1, c0, c1)`` (half-open) the box covers on a ``rows`` x ``cols`` grid laid over the
        image, e.g. a diffusion transformer's token grid (FLUX at 512 px: 32 x 32).

        Each edge maps by int truncation of ``coord * side / 1000`` (the released trainer's rule), clamped to the
        grid, so a box on cell edges covers exactly the cells inside it and a box thinner than a cell, between two
        edges, covers nothing (``r0 == r1``). ``keep_thin``: such a box covers the cell it starts in instead, so a
        thin defect never vanishes from the map. The box is clamped to the image first."""
        if rows < 1 or cols < 1:
            raise BoxError(f"grid must be at least 1 x 1, got {rows} x {cols}")
        x0, y0, x1, y1 = self.clamp()
        r0, c0 = min(int(y0 * rows / GRID), rows), min(int(x0 * cols / GRID), cols)
        r1, c1 = min(int(y1 * rows / GRID), rows), min(int(x1 * cols / GRID), cols)
        if keep_thin:
            r0, c0 = min(r0, rows - 1), min(c0, cols - 1)
            r1, c1 = max(r0 + 1, r1), max(c0 + 1, c1)
        return r0, r1, c0, c1

    def iou(self, other: Box) -> float:
        """IoU in plain float arithmetic, the same operations in the same order as :func:`iou_matrix` (so the
        same bits): a lone pair costs a microsecond instead of the array calls' twenty."""
        inter = max(min(self.x1, other.x1) - max(self.x0, other.x0), 0.0)
        inter *= max(min(self.y1, other.y1) - max(self.y0, other.y0), 0.0)
        area_a = max(self.x1 - self.x0, 0.0) * max(self.y1 - self.y0, 0.0)
        area_b = max(other.x1 - other.x0, 0.0) * max(other.y1 - other.y0, 0.0)
        union = (area_a + area_b) - inter
        return inter / union if union > 0 else 0.0

    def diou(self, other: Box) -> float:
        return float(diou_matrix(boxes_array([self]), boxes_array([other]))[0, 0])


# --------------------------------------------------------------------- vectorized maths
def median_box(boxes: Sequence[Box]) -> Box:
    """The coordinate-wise median of boxes (the mean of the middle two for an even count): consensus's merged box.
    Each box has x0 < x1, so the medians keep that order (the k-th smallest x0 is below the k-th smallest x1)."""
    if not boxes:
        raise ValueError("median_box needs at least one box")
    return Box(*(float(v) for v in np.median(boxes_array(boxes), axis=0)))


def boxes_array(boxes: Sequence[Box]) -> np.ndarray:
    """An ``(n, 4)`` float64 array of grid xyxy coordinates."""
    if not boxes:
        return np.zeros((0, 4), dtype=np.float64)
    return np.array([(b.x0, b.y0, b.x1, b.y1) for b in boxes], dtype=np.float64)


def grid_array(boxes: np.ndarray) -> np.ndarray:
    """``Box.to_grid`` of every row of an ``(n, 4)`` array at once: integer grid corners, round half up."""
    return np.floor(boxes + 0.5).astype(np.int64)


def scored_corners(boxes: np.ndarray) -> np.ndarray:
    """The corners every score reads (SDG-Eval, COCO AP, joint AP): :func:`grid_array` as float64. A box's
    ``box_2d`` is an integer on the 0-1000 grid in every file the toolkit writes, so a record scores the same in
    memory and after a round trip through a file, and no pair matches in one score but not in another (a
    Label Studio box at fractional percentages is read where its file puts it)."""
    return grid_array(boxes).astype(np.float64)


Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _columns(boxes: np.ndarray) -> Columns:
    """x0, y0, x1, y1 of (..., 4) boxes: views, which broadcast as the boxes do."""
    return boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]


def _pair_terms(a: Columns, b: Columns) -> tuple[np.ndarray, np.ndarray]:
    """Intersection and union of every pair. The first operation on both sides allocates the broadcast result;
    the rest works in place in it (the reward calls this on ~1,000 pairs, where numpy calls cost, not flops)."""
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    inter = np.minimum(ax1, bx1)
    inter -= np.maximum(ax0, bx0)
    np.maximum(inter, 0.0, out=inter)
    ih = np.minimum(ay1, by1)
    ih -= np.maximum(ay0, by0)
    np.maximum(ih, 0.0, out=ih)
    inter *= ih
    area_a = np.maximum(ax1 - ax0, 0.0)
    area_a *= np.maximum(ay1 - ay0, 0.0)
    area_b = np.maximum(bx1 - bx0, 0.0)
    area_b *= np.maximum(by1 - by0, 0.0)
    union = area_a + area_b
    union -= inter
    return inter, union


def _iou(a: Columns, b: Columns) -> np.ndarray:
    inter, union = _pair_terms(a, b)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _diou(a: Columns, b: Columns) -> np.ndarray:
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    iou = _iou(a, b)
    dcx = (ax0 + ax1) - bx0
    dcx -= bx1
    dcx *= 0.5
    dcx *= dcx
    dcy = (ay0 + ay1) - by0
    dcy -= by1
    dcy *= 0.5
    dcy *= dcy
    dcx += dcy
    ew = np.maximum(ax1, bx1)
    ew -= np.minimum(ax0, bx0)
    ew *= ew
    eh = np.maximum(ay1, by1)
    eh -= np.minimum(ay0, by0)
    eh *= eh
    ew += eh
    iou -= np.divide(dcx, ew, out=np.zeros_like(ew), where=ew > 0)
    return iou


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every row of ``a`` (n,4) with every row of ``b`` (m,4): an (n, m) array."""
    return _iou(_columns(a[:, None, :]), _columns(b[None, :, :]))


def diou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance-IoU (IoU minus squared centre distance over squared enclosing diagonal), (n, m), in (-1, 1]."""
    return _diou(_columns(a[:, None, :]), _columns(b[None, :, :]))


def _row_columns(boxes: np.ndarray) -> Columns:
    """x0, y0, x1, y1 of aligned (k,4) boxes as contiguous columns (one transposing copy)."""
    c = np.ascontiguousarray(np.asarray(boxes, dtype=np.float64).T)
    return c[0], c[1], c[2], c[3]


def iou_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``a[i]`` with ``b[i]`` for aligned (k,4) arrays: the matrix's arithmetic (the same bits as
    :func:`iou_matrix` and :meth:`Box.iou`) over every pair of a scoring run at once."""
    return _iou(_row_columns(a), _row_columns(b))


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """Width times height of every row of an (n,4) xyxy array (a COCO annotation's ``area`` of a box)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def diou_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """DIoU of ``a[i]`` with ``b[i]`` for aligned (k,4) arrays: one pass over many images' pairs at once.

    The matrix's arithmetic on contiguous coordinate columns (one transposing copy each side).
    """
    return _diou(_row_columns(a), _row_columns(b))


def max_weight_map(
    boxes: Sequence[Box], weights: Sequence[float], rows: int, cols: int, keep_thin: bool = False
) -> np.ndarray:
    """A ``(rows, cols)`` float32 map holding, at each cell, the largest weight of the boxes covering it (0 where
    none does): overlapping boxes of one kind do not add up. BoxFlow-GRPO's per-type penalty map W_t. Cells as
    :meth:`Box.grid_cells` maps them (``keep_thin`` as there)."""
    out = np.zeros((rows, cols), dtype=np.float32)
    for box, w in zip(boxes, weights, strict=True):
        r0, r1, c0, c1 = box.grid_cells(rows, cols, keep_thin)
        np.maximum(out[r0:r1, c0:c1], np.float32(w), out=out[r0:r1, c0:c1])
    return out


def boxes_from_heatmap(heatmap: np.ndarray, threshold: float, min_pixels: int = 1) -> list[tuple[Box, float]]:
    """One box per connected region (8-connected) of a ``(h, w)`` heatmap in [0, 1] above ``threshold``, with the
    region's peak value: RichHF-18K's maps as SDG boxes (importance from the peak). Regions smaller than
    ``min_pixels`` are dropped. Boxes cover whole pixels and are ordered by peak, highest first."""
    from scipy import ndimage

    h, w = heatmap.shape
    labels, n = ndimage.label(heatmap > threshold, structure=np.ones((3, 3), dtype=bool))
    out = []
    for k, sl in enumerate(ndimage.find_objects(labels), 1):
        if sl is None:
            continue
        region = labels[sl] == k
        if int(region.sum()) < min_pixels:
            continue
        peak = float(heatmap[sl][region].max())
        ys, xs = sl
        out.append((Box.from_pixels([xs.start, ys.start, xs.stop, ys.stop], w, h), peak))
    return sorted(out, key=lambda bp: -bp[1])


def heatmap_from_boxes(boxes: Sequence[Box], weights: Sequence[float], height: int, width: int) -> np.ndarray:
    """A ``(height, width)`` float32 map: the union of the boxes, each pixel the largest weight of the boxes over
    it (importance / 100 as intensity), 0 elsewhere. The inverse of :func:`boxes_from_heatmap` up to pixel edges
    (a box thinner than a pixel keeps the pixel it starts in)."""
    return max_weight_map(boxes, weights, height, width, keep_thin=True)
