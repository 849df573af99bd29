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

# Two columns. Left: only the image, with zoom, so it starts at the top of the editor and its height can be bounded
# by the window (IMAGE_MAX_HEIGHT leaves room for Label Studio's top bar, the annotation tabs and the bottom bar with
# Submit): the whole image is in view at common laptop sizes (checked at 1400x900 and 1280x720 by
# tests/test_browser.py), however long the prompt. Right: the prompt, the labels and the selected box's fields, in
# view while drawing. Rotation is off (rotated boxes change the anchor of x/y). The importance is a plain number input
# with no default: a slider or a default would save a value nobody chose.
IMAGE_MAX_HEIGHT = "calc(100vh - 230px)"
# The editor measures the image's column before its tool bar (42 px) takes its place beside the image, and for an
# image smaller than the column keeps the zoom it fitted to that first, wider measure: a 128 px image was drawn 42 px
# larger than its frame, 21 px of each edge cut off. Leaving the tool bar's width out from the start makes the first
# measure the final one (tests/test_browser.py checks small, medium and large images, wide and tall).
IMAGE_MAX_WIDTH = "calc(100% - 42px)"
LABEL_CONFIG = f"""<View>
  <Style>.sdg-caption {{ font-size: 15px; padding: 8px 12px; background: #f4f4f4; border-left: 4px solid #777;
  margin-bottom: 8px }}</Style>
  <View style="display: flex; gap: 16px; align-items: flex-start;">
    <View style="flex: 3; min-width: 0;">
      <Image name="{IMAGE}" value="$image" zoom="true" zoomControl="true" negativeZoom="true" zoomBy="1.5"
             crosshair="true" maxWidth="{IMAGE_MAX_WIDTH}" maxHeight="{IMAGE_MAX_HEIGHT}"/>
    </View>
    <View style="flex: 2; min-width: 280px; max-width: 440px;">
      <Header value="Prompt the image was generated from" size="6"/>
      <View className="sdg-caption"><Text name="caption" value="$caption"/></View>
      <Header value="Generator $generator, seed $seed, id $image_id" size="6"/>
      <RectangleLabels name="{BOX}" toName="{IMAGE}" canRotate="false" strokeWidth="2" opacity="0.25">
{chr(10).join(f'        <Label value="{lab}" background="{COLORS[lab]}" hotkey="{HOTKEYS[lab]}"/>' for lab in LABELS)}
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

GUIDELINES_FILE = Path(__file__).parent / "guidelines.md"


def guidelines_html(path: str | Path | None = None) -> str:
    """The guidelines (Markdown) as HTML for Label Studio's instructions panel: a hard-wrapped paragraph stays one
    paragraph, lists stay lists. Raw HTML in the file is escaped, not passed through."""
    from markdown_it import MarkdownIt

    text = Path(path or GUIDELINES_FILE).read_text(encoding="utf-8")
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
