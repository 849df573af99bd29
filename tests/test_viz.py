"""sdg viz draws with a TrueType font that scales with the image, wraps long text and marks what it cannot draw."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sdg_data.boxes import Box
from sdg_data.dataset import fonts
from sdg_data.dataset.viz import draw_record, text_size
from sdg_data.records import Defect, ImageRecord


LONG = "the left hand has six fingers that merge into the cup handle, " * 4


def _rec(desc: str, side: int) -> ImageRecord:
    return ImageRecord(image_id="x", defects=[Defect(Box(100, 100, 400, 600), "artifact", desc, 70)],
                       image_path="a.png", width=side, height=side, caption="a cup of tea")  # fmt: skip


def test_the_font_is_truetype_and_covers_accents_and_greek():
    assert fonts.main_font_path() and fonts.main_font_path().endswith("DejaVuSans.ttf")
    shown, fnt = fonts.pick("Die Hände, café, αβγ", 16)
    assert shown == "Die Hände, café, αβγ" and isinstance(fnt, fonts.ImageFont.FreeTypeFont)


def test_characters_without_a_glyph_degrade_clearly(monkeypatch):
    monkeypatch.setattr(fonts, "cjk_font_path", lambda: None)  # as on a machine without a CJK font
    shown, _ = fonts.pick("猫がいない cat", 16)
    assert shown.startswith(fonts.MISSING_MARK * 5 + " cat") and shown.endswith(fonts.NO_FONT_NOTE)


@pytest.mark.parametrize("side", [64, 512, 2048])
def test_long_text_wraps_inside_the_image_at_every_size(side):
    fnt = fonts.font(text_size(max(side, 768)))
    lines = fonts.wrap(LONG + "x" * 300, fnt, max(side, 768) - 20)
    assert len(lines) > 2 and all(fnt.getlength(line) <= max(side, 768) - 20 for line in lines)
    out = draw_record(Image.new("RGB", (side, side), (120, 160, 200)), _rec(LONG, side))
    w = max(side, 768)
    assert out.width == w and out.height > w + 4 * text_size(w)  # the strip grew to hold the wrapped lines
    strip = np.asarray(out.convert("L"))[w:]
    dark = strip < 100
    assert dark.any() and not dark[:, -2:].any()  # text drawn, none of it runs off the right edge


def test_bigger_images_get_bigger_text():
    assert text_size(768) == 16 and text_size(2048) == 43


def test_defect_coverage_counts_overlapping_boxes_once():
    from sdg_data.dataset.stats import covered_share

    a, b = Box(0, 0, 500, 500), Box(250, 250, 750, 750)
    assert covered_share([a]) == pytest.approx(0.25)
    assert covered_share([a, b]) == pytest.approx(0.25 + 0.25 - 0.0625)  # not 0.5
    assert covered_share([a, a]) == pytest.approx(0.25) and covered_share([]) == 0.0
    assert covered_share([Box(900, 900, 1000, 1000), Box(0, 0, 100, 100)]) == pytest.approx(0.02)


def test_report_tables_come_from_frames_with_one_row_per_image_and_defect():
    from sdg_data.dataset.stats import _quantile_table, frames

    recs = [
        ImageRecord(image_id="a", defects=[Defect(Box(0, 0, 500, 500), "artifact", "x y", 40),
                                           Defect(Box(0, 0, 500, 500), "artifact", "x y z", 60)],
                    image_path="a.png", width=8, height=8, generator="G1", split="train"),
        ImageRecord(image_id="b", defects=[], image_path="b.png", width=8, height=8, generator="G2", split="test"),
    ]  # fmt: skip
    img, dfs = frames(recs)
    assert list(img["kind"]) == ["artifact-only", "clean"] and list(img["boxes_artifact"]) == [2, 0]
    assert img.loc[0, "covered_artifact"] == pytest.approx(0.25)  # two boxes on the same place: a quarter
    q = _quantile_table(dfs, "importance")
    assert q.loc["artifact", "50%"] == 50 and q.loc["all", "n"] == 2


def test_the_legend_is_bounded_whatever_the_record_holds():
    """3,000 boxes with long descriptions and a 100 KB caption: every box is drawn, the legend lists the first
    ones and says how many more, and the picture stays a few megapixels (it was 137)."""
    from PIL import Image

    from sdg_data.boxes import Box
    from sdg_data.dataset.viz import LEGEND_DEFECTS, draw_record
    from sdg_data.records import Defect, ImageRecord

    defects = [Defect(Box.from_grid([i % 900, i % 800, i % 900 + 50, i % 800 + 60]), "artifact", "word " * 200, 50)
               for i in range(3000)]  # fmt: skip
    out = draw_record(Image.new("RGB", (512, 512)), ImageRecord(image_id="x", defects=defects, caption="c" * 100_000))
    assert out.width == 768 and out.width * out.height < 5_000_000, out.size
    short = [Defect(d.box, d.label, "a smear", 50) for d in defects]
    listed = draw_record(Image.new("RGB", (512, 512)), ImageRecord(image_id="y", defects=short[:LEGEND_DEFECTS]))
    cut = draw_record(Image.new("RGB", (512, 512)), ImageRecord(image_id="y", defects=short))
    assert cut.height == listed.height + round(text_size(768) * 1.3)  # one line more: "... and 2960 more defects"
