"""Draw the bundled demo sample: 24 small synthetic "generated images" with human-style annotations.

    python scripts/make_demo_sample.py   # rewrites sdg_data/demo/sample/

Flat-colour scenes (a few KB each) whose drawn flaws match the annotated boxes, spread over the four SDG-30K
generators, with a quarter of them clean, like the paper's composition. Notes are short, some in Chinese, as
the annotators wrote them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

from sdg_data.boxes import Box


OUT = Path(__file__).resolve().parents[1] / "sdg_data" / "demo" / "sample"
GENERATORS = ["FLUX.2-dev", "Z-Image-Turbo", "LongCat-Image", "SANA-1.5-1.6B"]
SIZE = 128
SCENES = [
    ("a yellow sun over a red house with two windows", "sun"),
    ("a green tree next to a blue pond", "tree"),
    ("three orange balloons in a clear sky", "balloons"),
    ("a white cat sitting on a purple rug", "cat"),
    ("a red car on a grey road at noon", "car"),
    ("two black birds on a power line", "birds"),
]


def grid(box_px: list[float]) -> list[int]:
    return Box.from_pixels(box_px, SIZE, SIZE).to_grid()


def draw(kind: str, flaw: int, rng: random.Random) -> tuple[Image.Image, list[dict]]:
    """One scene; ``flaw`` 0 = clean, 1 = artifact, 2 = misalignment, 3 = both."""
    im = Image.new("RGB", (SIZE, SIZE), (135, 190, 235))
    d = ImageDraw.Draw(im)
    defects: list[dict] = []
    j = rng.randint(-6, 6)
    if kind == "sun":
        d.rectangle([0, 96, SIZE, SIZE], fill=(90, 160, 70))
        sun = (200, 60, 200) if flaw & 2 else (250, 220, 40)
        d.ellipse([90 + j, 10, 118 + j, 38], fill=sun)
        d.rectangle([20, 60, 70, 100], fill=(200, 40, 40))
        d.polygon([(15, 60), (45, 35), (75, 60)], fill=(120, 30, 30))
        d.rectangle([28, 70, 38, 80], fill=(250, 250, 200))
        d.rectangle([52, 70, 62, 80], fill=(250, 250, 200))
        if flaw & 1:
            d.rectangle([40, 84, 50, 94], fill=(250, 250, 200))
            defects.append({"box": [38, 82, 52, 96], "label": "artifact", "note": "房子多出一扇错位的窗户"})
        if flaw & 2:
            defects.append(
                {
                    "box": [88 + j, 8, 120 + j, 40],
                    "label": "misalignment",
                    "note": "sun is magenta, caption says yellow",
                }
            )
    elif kind == "tree":
        d.rectangle([0, 90, SIZE, SIZE], fill=(100, 170, 80))
        d.rectangle([30, 60, 38, 95], fill=(110, 70, 30))
        d.ellipse([14 + j, 30, 54 + j, 66], fill=(30, 140, 40))
        pond = (150, 120, 60) if flaw & 2 else (40, 90, 220)
        d.ellipse([70, 92, 120, 116], fill=pond)
        if flaw & 1:
            d.line([(34, 60), (60, 20)], fill=(110, 70, 30), width=3)
            defects.append(
                {
                    "box": [32, 18, 62, 62],
                    "label": "artifact",
                    "note": "branch grows out of the canopy at a broken angle",
                }
            )
        if flaw & 2:
            defects.append({"box": [68, 90, 122, 118], "label": "misalignment", "note": "池塘是棕色的，不是蓝色"})
    elif kind == "balloons":
        n = 4 if flaw & 2 else 3
        for k in range(n):
            x = 15 + k * 28
            d.ellipse([x, 30 + j, x + 20, 56 + j], fill=(250, 140, 30))
            d.line([(x + 10, 56 + j), (x + 10, 100)], fill=(60, 60, 60))
        if flaw & 2:
            defects.append(
                {
                    "box": [97, 28 + j, 121, 102],
                    "label": "misalignment",
                    "note": "four balloons, caption asks for three",
                }
            )
        if flaw & 1:
            d.ellipse([43, 30 + j, 63, 56 + j], fill=(250, 140, 30), outline=(250, 250, 250), width=2)
            d.rectangle([45, 40 + j, 49, 46 + j], fill=(135, 190, 235))
            defects.append(
                {
                    "box": [41, 28 + j, 65, 58 + j],
                    "label": "artifact",
                    "note": "balloon has a hole and a doubled outline",
                }
            )
    elif kind == "cat":
        d.rectangle([10, 90, 118, 120], fill=(120, 40, 150))
        d.ellipse([40, 50, 88, 96], fill=(245, 245, 245))
        d.ellipse([50 + j // 2, 28, 78 + j // 2, 56], fill=(245, 245, 245))
        if flaw & 1:
            d.ellipse([60, 34, 66, 40], fill=(30, 30, 30))
            d.ellipse([60, 44, 66, 50], fill=(30, 30, 30))
            d.ellipse([68, 38, 74, 44], fill=(30, 30, 30))
            defects.append({"box": [56, 30, 78, 54], "label": "artifact", "note": "猫脸上有三只眼睛"})
        if flaw & 2:
            d.rectangle([96, 60, 120, 92], fill=(60, 60, 60))
            defects.append(
                {"box": [94, 58, 122, 94], "label": "misalignment", "note": "extra grey box object not in the caption"}
            )
    elif kind == "car":
        d.rectangle([0, 80, SIZE, SIZE], fill=(120, 120, 120))
        body = (40, 60, 200) if flaw & 2 else (210, 30, 30)
        d.rectangle([30 + j, 60, 98 + j, 82], fill=body)
        d.ellipse([36 + j, 76, 50 + j, 90], fill=(20, 20, 20))
        d.ellipse([78 + j, 76, 92 + j, 90], fill=(20, 20, 20))
        if flaw & 1:
            d.ellipse([56 + j, 78, 66 + j, 86], fill=(20, 20, 20))
            defects.append(
                {"box": [54 + j, 76, 68 + j, 88], "label": "artifact", "note": "a third wheel fused under the door"}
            )
        if flaw & 2:
            defects.append(
                {"box": [28 + j, 58, 100 + j, 92], "label": "misalignment", "note": "车是蓝色的，提示词要求红色"}
            )
    else:  # birds
        d.line([(0, 50), (SIZE, 56)], fill=(40, 40, 40), width=2)
        d.ellipse([30 + j, 40, 44 + j, 52], fill=(15, 15, 15))
        if not flaw & 2:
            d.ellipse([80, 42, 94, 54], fill=(15, 15, 15))
        else:
            defects.append(
                {"box": [70, 30, 104, 62], "label": "misalignment", "note": "only one bird, caption asks for two"}
            )
        if flaw & 1:
            d.polygon([(30 + j, 46), (20 + j, 36), (24 + j, 50)], fill=(15, 15, 15))
            d.polygon([(44 + j, 46), (54 + j, 36), (50 + j, 50)], fill=(15, 15, 15))
            defects.append(
                {"box": [18 + j, 34, 56 + j, 54], "label": "artifact", "note": "bird has two tails and no head"}
            )
    return im, defects


def main() -> None:
    rng = random.Random(7)
    (OUT / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    # composition close to the paper's: a quarter clean, most artifact-only, some both, a few misalignment-only
    flaws = [0, 1, 1, 3, 1, 2] * 4
    for i in range(24):
        caption, kind = SCENES[i % len(SCENES)]
        gen = GENERATORS[(i // len(SCENES)) % 4]
        flaw = flaws[(i * 5) % len(flaws)]
        im, defects = draw(kind, flaw, rng)
        name = f"demo-{i:02d}"
        im.save(OUT / "images" / f"{name}.png", optimize=True)
        lines.append(
            {
                "schema_version": "1.1",
                "image_id": name,
                "image_path": f"images/{name}.png",
                "width": SIZE,
                "height": SIZE,
                "caption": caption,
                "generator": gen,
                "seed": 1000 + i,
                "split": None,
                "defects": [
                    {"box_2d": grid(x["box"]), "label": x["label"], "description": x["note"], "importance": None}
                    for x in defects
                ],
                "provenance": {"source": "scripts/make_demo_sample.py (synthetic drawings)"},
            }
        )
    with (OUT / "records.jsonl").open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
