import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdg_data.boxes import Box, BoxError, boxes_array, diou_matrix, diou_rows, grid_array, iou_matrix


coord = st.integers(min_value=0, max_value=1000)


@st.composite
def grid_boxes(draw):
    x0, x1 = sorted(draw(st.lists(coord, min_size=2, max_size=2, unique=True)))
    y0, y1 = sorted(draw(st.lists(coord, min_size=2, max_size=2, unique=True)))
    return [x0, y0, x1, y1]


@given(grid_boxes())
def test_grid_round_trip_both_orders(b):
    assert Box.from_grid(b).to_grid() == b
    yxyx = [b[1], b[0], b[3], b[2]]
    assert Box.from_grid(b).to_grid(order="yxyx") == yxyx
    assert Box.from_grid(yxyx, order="yxyx") == Box.from_grid(b)


@given(grid_boxes(), st.integers(16, 4096), st.integers(16, 4096))
def test_pixel_round_trip(b, w, h):
    box = Box.from_grid(b)
    px = box.to_pixels(w, h)
    back = Box.from_pixels(px, w, h)
    assert back.to_grid() == b
    assert px[2] <= w + 1e-9 and px[3] <= h + 1e-9


@given(grid_boxes())
def test_label_studio_round_trip(b):
    box = Box.from_grid(b)
    ls = box.to_label_studio()
    assert Box.from_label_studio(**ls).to_grid() == b
    assert 0 <= ls["x"] <= 100 and 0 < ls["width"] <= 100


def test_named_conversions_by_hand():
    b = Box.from_pixels([256, 0, 512, 1024], width=1024, height=1024)
    assert b.to_grid() == [250, 0, 500, 1000]
    assert b.to_label_studio() == {"x": 25.0, "y": 0.0, "width": 25.0, "height": 100.0}
    assert Box.from_pixels([100, 50, 300, 150], width=2000, height=500).to_grid() == [50, 100, 150, 300]
    assert Box.from_pixels([0, 0, 10, 20], 100, 100, order="yxyx").to_grid() == [0, 0, 200, 100]


def test_rounding_is_half_up():
    assert Box(0.5, 1.5, 2.5, 3.49).to_grid() == [1, 2, 3, 3]


def test_clamp_and_problems():
    assert Box(-5, 10, 1004, 20).clamp().to_grid() == [0, 10, 1000, 20]
    assert "inverted" in Box(50, 0, 10, 10).problem()
    assert "zero-area" in Box(10, 10, 10, 20).problem()
    assert "outside" in Box(-1, 0, 10, 10).problem()
    assert "thinner" in Box(0, 0, 1, 10).problem(min_side=2)
    assert Box(0, 0, 1, 1).problem() is None


@pytest.mark.parametrize("bad", [[1, 2, 3], "1,2,3,4", [1, 2, 3, None], [1, 2, 3, True], [1, 2, 3, math.nan]])
def test_bad_box_input_is_named(bad):
    with pytest.raises(BoxError):
        Box.from_grid(bad)


def test_bad_order_rejected():
    with pytest.raises(BoxError, match="order"):
        Box.from_grid([0, 0, 1, 1], order="xywh")


def test_iou_and_diou_by_hand():
    g = Box.from_grid([0, 0, 100, 100])
    p = Box.from_grid([50, 0, 150, 100])
    assert g.iou(p) == pytest.approx(1 / 3)
    # centres 50 apart, enclosing box 150 x 100: 2500 / 32500
    assert g.diou(p) == pytest.approx(1 / 3 - 2500 / 32500)
    assert g.iou(g) == 1.0 and g.diou(g) == 1.0
    far = Box.from_grid([900, 900, 1000, 1000])
    assert g.iou(far) == 0.0 and -1.0 < g.diou(far) < 0.0


def test_iou_exact_at_threshold_edges():
    g = boxes_array([Box.from_grid([0, 0, 100, 100])])
    p = boxes_array([Box.from_grid([0, 0, 100, 50]), Box.from_grid([0, 0, 100, 10])])
    assert iou_matrix(g, p).tolist() == [[0.5, 0.1]]


@given(st.lists(grid_boxes(), min_size=1, max_size=5), st.lists(grid_boxes(), min_size=1, max_size=5))
def test_matrices_are_bounded_and_symmetric(a, b):
    A = boxes_array([Box.from_grid(x) for x in a])
    B = boxes_array([Box.from_grid(x) for x in b])
    iou, diou = iou_matrix(A, B), diou_matrix(A, B)
    assert iou.shape == (len(a), len(b))
    assert np.all((iou >= 0) & (iou <= 1 + 1e-12))
    assert np.all((diou > -1) & (diou <= iou + 1e-12))
    np.testing.assert_allclose(iou_matrix(B, A), iou.T)


@given(st.lists(st.tuples(grid_boxes(), grid_boxes()), min_size=0, max_size=12))
def test_diou_rows_is_the_matrix_diagonal_bit_for_bit(pairs):
    """The reward's in-place row kernel does the matrix's arithmetic in the same order: identical floats."""
    A = boxes_array([Box.from_grid(a) for a, _ in pairs])
    B = boxes_array([Box.from_grid(b) for _, b in pairs])
    rows = diou_rows(A, B)
    assert rows.shape == (len(pairs),)
    if pairs:
        assert np.array_equal(rows, np.diagonal(diou_matrix(A, B)))


coord_f = st.floats(min_value=0, max_value=1000, allow_nan=False)


@given(st.lists(st.tuples(coord_f, coord_f, coord_f, coord_f), min_size=2, max_size=2), st.booleans())
def test_scalar_iou_is_the_matrix_entry_bit_for_bit(corners, snap):
    """Box.iou (plain floats, the lone-pair fast path of eval and joint AP) does the matrix's arithmetic."""
    boxes = []
    for x0, y0, x1, y1 in corners:
        b = Box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        boxes.append(Box(*map(float, b.to_grid())) if snap else b)
    a, b = boxes
    assert a.iou(b) == float(iou_matrix(boxes_array([a]), boxes_array([b]))[0, 0])
    assert b.iou(a) == float(iou_matrix(boxes_array([b]), boxes_array([a]))[0, 0])


def test_grid_array_is_to_grid_of_each_row():
    rows = np.array([[0.5, 1.49, 2.5, 999.5], [0.0, 0.49999, 10.5000001, 1000.0]])
    assert grid_array(rows).tolist() == [Box(*r).to_grid() for r in rows.tolist()]
