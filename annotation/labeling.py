"""What the annotators see: the labeling config (XML) and the guidelines shown as the project's instructions.

The names in the config (``defect``, ``description``, ``importance``, ``image``) are what push, predict and pull
read and write; change them here only, with the version.
"""

from __future__ import annotations

import html
from pathlib import Path

from sdg_data.records import IMPORTANCE_MAX, IMPORTANCE_MIN, LABELS  # declared once, in the data contract


CONFIG_VERSION = "sdg-labeling/1"
BOX, TEXT, NUMBER, IMAGE = "defect", "description", "importance", "image"
HOTKEYS = {"artifact": "1", "misalignment": "2"}
COLORS = {"artifact": "#D32F2F", "misalignment": "#1565C0"}

# Two columns: the image with zoom on the left; the labels and the selected box's fields on the right, so the
# per-box inputs stay in view. Rotation is off (rotated boxes change the anchor of x/y). The importance is a plain
# number input with no default: a slider or a default would save a value nobody chose.
LABEL_CONFIG = f"""<View>
  <Style>.sdg-caption {{ font-size: 16px; padding: 8px 12px; background: #f4f4f4; border-left: 4px solid #777 }}
  </Style>
  <Header value="Prompt the image was generated from" size="5"/>
  <View className="sdg-caption"><Text name="caption" value="$caption"/></View>
  <Header value="Generator $generator, seed $seed, id $image_id" size="6"/>
  <View style="display: flex; gap: 16px; align-items: flex-start;">
    <View style="flex: 3; min-width: 0;">
      <Image name="{IMAGE}" value="$image" zoom="true" zoomControl="true" negativeZoom="true" zoomBy="1.5"
             crosshair="true" maxWidth="100%"/>
    </View>
    <View style="flex: 1; min-width: 280px;">
      <RectangleLabels name="{BOX}" toName="{IMAGE}" canRotate="false" strokeWidth="2" opacity="0.25">
{chr(10).join(f'        <Label value="{lab}" background="{COLORS[lab]}" hotkey="{HOTKEYS[lab]}"/>' for lab in LABELS)}
      </RectangleLabels>
      <View visibleWhen="region-selected" whenTagName="{BOX}">
        <Header value="Selected box" size="6"/>
        <TextArea name="{TEXT}" toName="{IMAGE}" perRegion="true" editable="true" rows="3" maxSubmissions="1"
                  required="true" requiredMessage="Each box needs a description (Shift+Enter saves it)"
                  placeholder="Which part, what is wrong, what you see"/>
        <Number name="{NUMBER}" toName="{IMAGE}" perRegion="true" min="{IMPORTANCE_MIN}" max="{IMPORTANCE_MAX}"
                step="1" required="true" requiredMessage="Each box needs an importance from 1 to 100"/>
      </View>
    </View>
  </View>
</View>
"""

GUIDELINES_FILE = Path(__file__).parent / "guidelines.md"


def guidelines_html(path: str | Path | None = None) -> str:
    """The guidelines (markdown-ish text) as simple HTML for Label Studio's instructions panel."""
    text = Path(path or GUIDELINES_FILE).read_text(encoding="utf-8")
    out: list[str] = []
    in_list = False
    for line in text.splitlines():
        s = line.rstrip()
        if s.startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{html.escape(s[2:])}</li>")
            continue
        if in_list:
            out.append("</ul>")
            in_list = False
        if s.startswith("#"):
            level = min(len(s) - len(s.lstrip("#")) + 2, 6)
            out.append(f"<h{level}>{html.escape(s.lstrip('#').strip())}</h{level}>")
        elif s:
            out.append(f"<p>{html.escape(s)}</p>")
    if in_list:
        out.append("</ul>")
    return "\n".join(out)
