"""What the annotators see: the labeling config (XML) and the guidelines shown as the project's instructions.

The names in the config (``defect``, ``description``, ``importance``, ``image``) are what push, predict and pull
read and write; change them here only, with the version.
"""

from __future__ import annotations

from pathlib import Path

from sdg_data.records import IMPORTANCE_MAX, IMPORTANCE_MIN, LABELS  # declared once, in the data contract


CONFIG_VERSION = "sdg-labeling/1"
BOX, TEXT, NUMBER, IMAGE = "defect", "description", "importance", "image"
HOTKEYS = {"artifact": "1", "misalignment": "2"}
COLORS = {"artifact": "#D32F2F", "misalignment": "#1565C0"}

# The layout, measured in Chromium on Label Studio 1.23.2 by tests/test_browser.py (image share of the window and the
# fields on top at 1280x720, 1400x900 and 1920x1080, in the task list's editor and in Label All Tasks):
# - Label Studio's own side panels (region list, details, history) are hidden unless the project asks for them
#   (``side_panels``): they took 320 px beside the image. Their padding is set inline by the editor, hence !important.
# - Two columns: the image, then one fixed column with the prompt, the labels and the selected box's fields. The image
#   column takes the rest of the width, less the zoom bar (42 px) that the editor places beside the image after its
#   first measure (without that margin a small image was fitted to the wider first measure and drawn larger than its
#   frame). Its height is bounded by the window less the top bar, the annotation tabs and the bottom bar with Submit.
# - The prompt scrolls in a box of its own above a set height, so a long prompt never pushes the fields under the
#   bottom bar; the headers are small, the text area's counters are hidden (its Add button and hint stay on one line).
# - No child combinator (>) in the rules: Label Studio escapes it in a Style tag.
# - In the task list beside the editor, thumbnails sit at the left of their cell, so a wide one is not cut by the
#   narrow list.
# Rotation is off (rotated boxes change the anchor of x/y). The importance is a plain number input with no default: a
# slider or a default would save a value nobody chose. The metadata line is built by push (task data ``about``): a
# record with no generator or seed shows no empty "Generator , seed ,".
FIELDS_WIDTH_PX = 320
IMAGE_MAX_WIDTH = "calc(100% - 42px)"
IMAGE_MAX_HEIGHT_OFFSET_PX = 180  # the top bar, the annotation tabs, the bottom bar
IMAGE_MAX_HEIGHT = f"calc(100vh - {IMAGE_MAX_HEIGHT_OFFSET_PX}px)"
_STYLE = f"""
  .sdg-row {{ display: flex; gap: 14px; align-items: flex-start; }}
  .sdg-image {{ flex: 1 1 auto; min-width: 0; }}
  .sdg-fields {{ flex: 0 0 {FIELDS_WIDTH_PX}px; width: {FIELDS_WIDTH_PX}px; }}
  .sdg-fields h4 {{ font-size: 14px; line-height: 1.3; margin: 8px 0 4px; }}
  .sdg-caption {{ font-size: 14px; padding: 6px 10px; background: #f4f4f4; border-left: 4px solid #777;
    max-height: 20vh; overflow-y: auto; }}
  .sdg-about {{ font-size: 12px; color: #666; margin: 4px 0 8px; }}
  .sdg-fields .lsf-text-area .justify-between .flex:first-child {{ display: none; }}
  .sdg-fields .lsf-text-area .justify-between p {{ white-space: nowrap; }}
  .lsf-table__cell div:has(img) {{ justify-content: flex-start !important; }}
"""
_HIDE_PANELS = """
  .lsf-sidepanels { padding-left: 0 !important; padding-right: 0 !important; }
  .lsf-sidepanels__wrapper { display: none !important; }
"""


def label_config(side_panels: bool = False) -> str:
    """The labeling config; ``side_panels`` keeps Label Studio's region list and details beside the image."""
    labels = "\n".join(
        f'        <Label value="{lab}" background="{COLORS[lab]}" hotkey="{HOTKEYS[lab]}"/>' for lab in LABELS
    )
    return f"""<View>
  <Style>{_STYLE}{"" if side_panels else _HIDE_PANELS}  </Style>
  <View className="sdg-row">
    <View className="sdg-image">
      <Image name="{IMAGE}" value="$image" zoom="true" zoomControl="true" negativeZoom="true" zoomBy="1.5"
             crosshair="true" maxWidth="{IMAGE_MAX_WIDTH}" maxHeight="{IMAGE_MAX_HEIGHT}"/>
    </View>
    <View className="sdg-fields">
      <Header value="Prompt the image was generated from" size="6"/>
      <View className="sdg-caption"><Text name="caption" value="$caption"/></View>
      <View className="sdg-about"><Text name="about" value="$about"/></View>
      <RectangleLabels name="{BOX}" toName="{IMAGE}" canRotate="false" strokeWidth="2" opacity="0.25">
{labels}
      </RectangleLabels>
      <View visibleWhen="region-selected" whenTagName="{BOX}">
        <Header value="Selected box: description" size="6"/>
        <TextArea name="{TEXT}" toName="{IMAGE}" perRegion="true" editable="true" rows="3" maxSubmissions="1"
                  required="true" requiredMessage="Each box needs a description"
                  placeholder="Which part, what is wrong, what you see"/>
        <Header value="Importance, 1 to 100 (1-14 barely visible, 90-100 the image fails)" size="6"/>
        <Number name="{NUMBER}" toName="{IMAGE}" perRegion="true" min="{IMPORTANCE_MIN}" max="{IMPORTANCE_MAX}"
                step="1" required="true" requiredMessage="Each box needs an importance from 1 to 100"/>
      </View>
    </View>
  </View>
</View>
"""


LABEL_CONFIG = label_config()


def about_line(generator: str | None, seed: int | None, image_id: str) -> str:
    """The metadata line under the prompt: only the parts a record has (no "Generator , seed ," for a bare one)."""
    parts = [generator or "", f"seed {seed}" if seed is not None else "", f"id {image_id}"]
    return " \u00b7 ".join(p for p in parts if p)


GUIDELINES_FILE = Path(__file__).parent / "guidelines.md"


def guidelines_html(path: str | Path | None = None) -> str:
    """The guidelines (Markdown) as HTML for Label Studio's instructions panel: a hard-wrapped paragraph stays one
    paragraph, lists stay lists. Raw HTML in the file is escaped, not passed through."""
    from markdown_it import MarkdownIt

    text = Path(path or GUIDELINES_FILE).read_text(encoding="utf-8")
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
