import pytest

from sdg_data.answer import parse_response
from sdg_data.dataset.jitter import JitterConfig, jitter_offsets, pair_responses
from sdg_data.records import ImageRecord
from tests.conftest import defect


def _rec(boxes, image_id="img-1"):
    return ImageRecord(image_id, [defect(b, "artifact", "d", 50) for b in boxes], think="### Step 1: x")


def test_epoch0_keeps_boxes_and_later_epochs_move_each_coordinate_within_amplitude():
    rec = _rec([[100, 100, 300, 300], [500, 600, 700, 900]])
    pairs = pair_responses(rec, JitterConfig())
    assert [e for e, _, _ in pairs] == [0, 1, 2]
    got = [[d.box.to_grid() for d in parse_response(r).defects] for _, r, _ in pairs]
    assert got[0] == [[100, 100, 300, 300], [500, 600, 700, 900]]
    for epoch in (1, 2):
        offsets = pairs[epoch][2]
        assert all(-10 <= o <= 10 for row in offsets for o in row)
        for moved, orig, off in zip(got[epoch], got[0], offsets):
            assert moved == [a + b for a, b in zip(orig, off)]  # far from the edges: no clamping
    assert pairs[1][2] != pairs[2][2]  # independent draws per epoch
    assert len({r.split("</think>")[0] for _, r, _ in pairs}) == 1  # the think never changes


def test_offsets_are_seeded_by_seed_image_and_epoch():
    cfg = JitterConfig()
    a = jitter_offsets("x", 5, 1, cfg)
    assert a == jitter_offsets("x", 5, 1, cfg)
    assert a != jitter_offsets("y", 5, 1, cfg)
    assert a != jitter_offsets("x", 5, 1, JitterConfig(seed=7))
    assert jitter_offsets("x", 3, 0, cfg) == [[0, 0, 0, 0]] * 3


def test_edges_clamp_and_boxes_stay_valid():
    rec = _rec([[0, 0, 3, 3], [997, 997, 1000, 1000]])
    for seed in range(30):
        for _, response, _ in pair_responses(rec, JitterConfig(seed=seed)):
            res = parse_response(response)
            assert res.format_ok, res.reason
            for d in res.defects:
                x0, y0, x1, y1 = d.box.to_grid()
                assert 0 <= x0 < x1 <= 1000 and 0 <= y0 < y1 <= 1000


def test_options_and_clean_images():
    pairs = pair_responses(_rec([]), JitterConfig(epochs=5, amplitude=3))
    assert len(pairs) == 5 and all(r.endswith("<answer>[]</answer>") for _, r, _ in pairs)
    with pytest.raises(ValueError, match="epochs"):
        JitterConfig(epochs=0)
    with pytest.raises(ValueError, match="think"):
        pair_responses(ImageRecord("a", []), JitterConfig())
