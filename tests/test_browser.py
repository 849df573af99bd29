"""The annotator's flow in a real browser: headless Chromium (the system's package) driving the project's Label
Studio UI with Playwright. Each test pulls what the browser saved through ``sdg annotate pull`` and checks it.

Skipped, with the reason, when Chromium or Playwright is missing (``make browser`` installs both). A failing test
leaves a screenshot in ``outputs/browser-failures/``.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from annotation.config import AnnotateConfig
from annotation.testkit import invite_link
from tests.browserkit import chromium as _chromium
from tests.browserkit import needs_browser
from tests.lskit import ADMIN, ROOT, TOKEN, needs_server


pytestmark = [needs_server, needs_browser]

SHOTS = ROOT / "outputs" / "browser-failures"
VIEWPORTS = [(1400, 900), (1280, 720), (1920, 1080)]
BORDER = (255, 0, 0)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=_chromium(), headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield b
        b.close()


@contextmanager
def _own_page(browser, viewport: tuple[int, int], shot: str):
    """A page in a browser context of its own; a screenshot is kept if the block fails."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    try:
        yield pg
    except BaseException:
        SHOTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(SHOTS / f"{shot}.png"))
        raise
    finally:
        context.close()


def _login(page, url: str, email: str, password: str) -> None:
    page.goto(f"{url}/user/login/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda u: "/user/login" not in u, timeout=30_000)


@pytest.fixture()
def page(browser, ls_server, request):
    """A logged-in admin page at 1400x900; a screenshot is kept when the test fails."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    _login(pg, ls_server["cfg"].url, ADMIN["LABEL_STUDIO_USERNAME"], ADMIN["LABEL_STUDIO_PASSWORD"])
    yield pg
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        SHOTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(SHOTS / f"{request.node.name}.png"))
    context.close()


@pytest.fixture()
def project(ls_server, monkeypatch, request, tmp_path):
    """A fresh project per test with three bordered images (square, wide, tall), pushed as tasks."""
    from annotation.client import Connection, ensure_project
    from annotation.push import push, server_tasks

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    import hashlib

    name = request.node.name
    tag = f"{name.replace('[', '-').replace(']', '')[:30]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    cfg = AnnotateConfig(**{**ls_server["cfg"].__dict__, "project_title": f"ui-{tag}"})
    conn = Connection(cfg)
    p, _ = ensure_project(conn)
    sizes = ALL_SIZES if "whole_image" in name else SIZES
    samples = _bordered_images(ls_server["images"], tag, sizes)
    push(samples, conn, tmp_path)
    return {"conn": conn, "id": p.id, "tasks": server_tasks(conn, p.id), "url": cfg.url, "out": tmp_path}


SIZES = {"square": (1024, 1024), "wide": (1536, 640), "tall": (640, 1536)}
# the editor's own fitting was checked on large images only; the demo's 128 px images were drawn larger than their
# frame (about 21 px of each edge cut off): every size class, square, wide and tall, in both views and window sizes
ALL_SIZES = {
    "small": (128, 128), "small-wide": (256, 128), "small-tall": (128, 256),
    "medium": (512, 512), "medium-wide": (768, 320), "medium-tall": (320, 768),
    **SIZES,
}  # fmt: skip


LONG_PROMPT = " ".join(["a photorealistic close-up of an elderly fisherman mending a blue net on a wooden pier"] * 5)


def _bordered_images(images: Path, tag: str, sizes: dict[str, tuple[int, int]] = SIZES) -> Path:
    """Grey images with a red frame 1.5% of their size wide (4 px at least): the frame shows whether every edge is
    in view. The square image (the first task) has a long prompt (five times a long sentence), the tall one no
    generator or seed."""
    from PIL import Image, ImageDraw

    folder = images / tag
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, (w, h) in sizes.items():
        im = Image.new("RGB", (w, h), (200, 200, 200))
        ImageDraw.Draw(im).rectangle([0, 0, w - 1, h - 1], outline=BORDER, width=max(4, max(w, h) * 3 // 200))
        im.save(folder / f"{name}.png")
        lines.append({"image_id": name, "image_path": f"{tag}/{name}.png", "caption": f"a {name} photo of a cat",
                      "generator": "Z-Image-Turbo", "seed": 7, "split": "train", "defects": []})  # fmt: skip
        if name == "square":
            lines[-1]["caption"] = LONG_PROMPT
        if name == "tall":
            del lines[-1]["generator"], lines[-1]["seed"]
    path = images / f"{tag}.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


# ------------------------------------------------------------------ helpers that act as the annotator
def _open_task(page, project: dict, image_id: str) -> dict:
    """Open one task in the Data Manager's editor; returns the image's box on screen."""
    page.goto(f"{project['url']}/projects/{project['id']}/data?tab=1&task={project['tasks'][image_id]}")
    return _image_box(page)


def _image_box(page) -> dict:
    img = page.locator("img[src^='blob:']").first
    img.wait_for(state="visible")
    page.keyboard.press("Escape")  # the instructions modal, when it opens first
    time.sleep(1.0)
    box = img.bounding_box()
    assert box and box["width"] > 50, box
    return box


def _stage_box(page) -> dict | None:
    """The box of the element that clips the image (the nearest ancestor with hidden overflow), or None."""
    return page.evaluate(
        """() => {
            const img = document.querySelector("img[src^='blob:']");
            for (let el = img && img.parentElement; el; el = el.parentElement) {
                const s = getComputedStyle(el);
                if (s.overflow.includes('hidden') || s.overflowX === 'hidden' || s.overflowY === 'hidden') {
                    const r = el.getBoundingClientRect();
                    return {x: r.x, y: r.y, width: r.width, height: r.height};
                }
            }
            return null;
        }"""
    )


def _at(box: dict, fx: float, fy: float) -> tuple[int, int]:
    """Whole screen pixels at a fraction of the image (the mouse moves by pixels)."""
    return round(box["x"] + fx * box["width"]), round(box["y"] + fy * box["height"])


def _grid(box: dict, px: int, py: int) -> tuple[float, float]:
    """Where a screen pixel falls on the 0-1000 grid of the image."""
    return (px - box["x"]) / box["width"] * 1000, (py - box["y"]) / box["height"] * 1000


def _drag(page, start: tuple[int, int], end: tuple[int, int]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=10)
    page.mouse.up()
    time.sleep(0.8)


def _draw(page, key: str, start: tuple[int, int], end: tuple[int, int]) -> None:
    page.keyboard.press(key)
    time.sleep(0.4)
    _drag(page, start, end)


def _select_region(page, start: tuple[int, int], end: tuple[int, int]) -> None:
    """Click inside a box (a new box is not selected by itself) until its fields appear on the right; on a busy
    2-core machine the first click can land while the editor is still busy with the drawing."""
    area = page.locator("textarea").first
    for attempt in range(4):
        if attempt:
            page.keyboard.press("Escape")
            time.sleep(0.5)
        page.mouse.click((start[0] + end[0]) // 2 + attempt, (start[1] + end[1]) // 2 + attempt)
        try:
            area.wait_for(state="visible", timeout=4_000)
            return
        except Exception:  # noqa: BLE001 - playwright's timeout: try again
            continue
    area.wait_for(state="visible")


def _describe(page, text: str, importance: int | str, commit: str = "shift+enter") -> None:
    area = page.locator("textarea").first
    area.click()
    area.type(text, delay=5)
    if commit == "shift+enter":
        page.keyboard.press("Shift+Enter")
    time.sleep(0.3)
    number = page.locator("input[type=number]").first
    number.click()
    number.fill(str(importance))
    number.press("Tab")
    time.sleep(0.3)


def _submit(page) -> None:
    page.get_by_role("button", name="Submit").first.click()
    time.sleep(2.0)


def _pull(project: dict, name: str = "pulled.jsonl") -> dict[str, dict]:
    from annotation.pull import pull

    out = project["out"] / name
    pull(project["conn"], out)
    return {r["image_id"]: r for r in map(json.loads, out.read_text().splitlines())}


def _annotations(project: dict, image_id: str) -> list:
    return project["conn"].client.annotations.list(id=project["tasks"][image_id])


# ------------------------------------------------------------------ the tests
def test_login_open_the_project_and_read_the_instructions(page, project):
    from annotation.labeling import guidelines_html

    page.goto(f"{project['url']}/projects/")
    page.get_by_text(project["conn"].cfg.project_title).first.wait_for()
    _open_task(page, project, "square")
    page.get_by_role("button", name="Instructions").first.click()
    panel = page.locator(".ant-modal-content, [class*=modal]").filter(has_text="The two labels").first
    panel.wait_for(state="visible")
    text = panel.inner_text()
    assert "How to annotate an image" in text and "Importance (required for every box, 1 to 100)" in text
    # one paragraph per paragraph of the file: a hard-wrapped paragraph is not split at each line
    first = panel.locator("p").filter(has_text="You see one image").first
    assert "submitted with no boxes at all" in first.inner_text()
    assert panel.locator("p").count() == guidelines_html().count("<p>")
    assert panel.locator("li").count() == guidelines_html().count("<li>")


def test_draw_describe_submit_then_pull_gives_the_drawn_box(page, project):
    box = _open_task(page, project, "square")
    start, end = _at(box, 0.2, 0.3), _at(box, 0.6, 0.7)
    _draw(page, "1", start, end)
    _select_region(page, start, end)
    _describe(page, "the left hand has six fingers", 70)
    _submit(page)
    recs = _pull(project)
    (d,) = recs["square"]["defects"]
    want = [*_grid(box, *start), *_grid(box, *end)]
    assert d["label"] == "artifact" and d["importance"] == 70 and d["description"] == "the left hand has six fingers"
    assert all(abs(a - b) <= 2.5 for a, b in zip(d["box_2d"], want)), (d["box_2d"], want)
    assert d["provenance"]["origin"] == "manual"


def test_a_clean_image_is_submitted_with_no_box(page, project):
    _open_task(page, project, "wide")
    _submit(page)
    assert _pull(project)["wide"]["defects"] == []


def test_submit_refuses_an_incomplete_box(page, project):
    box = _open_task(page, project, "square")
    start, end = _at(box, 0.1, 0.1), _at(box, 0.4, 0.4)
    _draw(page, "2", start, end)
    _select_region(page, start, end)
    number = page.locator("input[type=number]").first
    number.click()
    number.fill("150")
    number.press("Tab")
    _submit(page)
    assert _annotations(project, "square") == []  # no description: nothing saved
    page.get_by_text("Each box needs a description").first.wait_for(state="visible")
    page.get_by_role("button", name="OK").click()
    # a description, but the importance still 150: refused too
    _select_region(page, start, end)
    area = page.locator("textarea").first
    area.click()
    area.type("a dog, the prompt asks for a cat", delay=5)
    page.keyboard.press("Shift+Enter")
    _submit(page)
    assert _annotations(project, "square") == []
    page.get_by_role("button", name="OK").click()
    # a valid importance makes Submit work
    number = page.locator("input[type=number]").first
    number.click()
    number.fill("55")
    number.press("Tab")
    _submit(page)
    (ann,) = _annotations(project, "square")
    assert not ann.was_cancelled
    (d,) = _pull(project)["square"]["defects"]
    assert (d["label"], d["importance"], d["description"]) == ("misalignment", 55, "a dog, the prompt asks for a cat")


def test_prefilled_predictions_keep_move_delete(page, project):
    from annotation.predict import predict

    pred = {"image_id": "square", "defects": [
        {"box_2d": [100, 100, 300, 300], "label": "artifact", "description": "melted ear", "importance": 60},
        {"box_2d": [500, 500, 700, 700], "label": "misalignment", "description": "red, not blue", "importance": 40},
        {"box_2d": [750, 100, 900, 250], "label": "artifact", "description": "noise", "importance": 10},
    ]}  # fmt: skip
    pfile = project["out"] / "preds.jsonl"
    pfile.write_text(json.dumps(pred) + "\n")
    assert predict(pfile, project["conn"], "detector-v1", project["out"])["created"] == 1
    box = _open_task(page, project, "square")
    # move the second box: drag its middle by 10% of the image to the left
    _drag(page, _at(box, 0.6, 0.6), _at(box, 0.5, 0.6))
    # delete the third: select it, then the Delete key
    page.keyboard.press("Escape")
    page.mouse.click(*_at(box, 0.825, 0.175))
    time.sleep(0.5)
    page.keyboard.press("Backspace")
    time.sleep(0.8)
    _submit(page)
    (rec,) = [r for iid, r in _pull(project).items() if iid == "square"]
    by_desc = {d["description"]: d for d in rec["defects"]}
    assert set(by_desc) == {"melted ear", "red, not blue"}
    assert by_desc["melted ear"]["provenance"]["origin"] == "prediction" and by_desc["melted ear"]["box_2d"] == [
        100,
        100,
        300,
        300,
    ]
    moved = by_desc["red, not blue"]
    assert moved["provenance"]["origin"] == "prediction-changed"
    assert abs(moved["box_2d"][0] - 400) <= 3 and abs(moved["box_2d"][2] - 600) <= 3 and moved["box_2d"][1] == 500


@pytest.mark.parametrize("leave", ["importance", "submit"])
def test_typed_text_is_saved_when_the_field_loses_focus(page, project, leave):
    """The real rule, found here: the description is saved with Shift+Enter or the Add button, and also as soon as
    the field loses focus (the importance field, another box, Submit): text typed and left unsaved is not lost."""
    box = _open_task(page, project, "square")
    start, end = _at(box, 0.3, 0.3), _at(box, 0.5, 0.5)
    _draw(page, "1", start, end)
    _select_region(page, start, end)
    if leave == "importance":
        _describe(page, "a smeared face in the crowd", 30, commit="none")  # typed, then the importance field
    else:
        number = page.locator("input[type=number]").first
        number.click()
        number.fill("30")
        area = page.locator("textarea").first
        area.click()
        area.type("a smeared face in the crowd", delay=5)
        # the cursor is still in the field when Submit is clicked
    _submit(page)
    (d,) = _pull(project)["square"]["defects"]
    assert d["description"] == "a smeared face in the crowd" and d["importance"] == 30


LAYOUT = ROOT / "outputs" / "browser-layout"


def _layout(page) -> dict:
    """The boxes of the image's column and the fields' column."""
    return page.evaluate(
        """() => Object.fromEntries(['.sdg-image', '.sdg-fields'].map(sel => {
            const r = document.querySelector(sel).getBoundingClientRect();
            return [sel.slice(1), {x: r.x, y: r.y, width: r.width, height: r.height}];
        }))"""
    )


@pytest.mark.parametrize("viewport", VIEWPORTS, ids=lambda v: f"{v[0]}x{v[1]}")
def test_the_whole_image_is_in_view_and_as_large_as_the_window_allows(browser, ls_server, project, viewport):
    """Every edge of the red frame is on screen and above the bottom bar, for small, medium and large images, square,
    wide and tall, in the Data Manager's editor and in Label All Tasks; and the image fills one of its two bounds:
    its column's width (less the zoom bar) or the window's height less the bars. The image's column takes most of the
    window (Label Studio's side panels give it their width). The displayed size as a share of the window, per size
    class and view, is written to outputs/browser-layout/."""
    from PIL import Image

    from annotation.labeling import FIELDS_WIDTH_PX, IMAGE_MAX_HEIGHT_OFFSET_PX

    vw, vh = viewport
    figures: dict[str, dict] = {}
    with _own_page(browser, viewport, f"whole-image-{vw}") as pg:
        _login(pg, project["url"], ADMIN["LABEL_STUDIO_USERNAME"], ADMIN["LABEL_STUDIO_PASSWORD"])
        views = [(f"task/{name}", lambda n=name: _open_task(pg, project, n)) for name in ALL_SIZES]
        url = f"{project['url']}/projects/{project['id']}/data?labeling=1"
        views.append(("stream/square", lambda: (pg.goto(url), _image_box(pg))[1]))
        for name, open_view in views:
            box = open_view()
            shot = project["out"] / f"{name.replace('/', '-')}-{vw}.png"
            pg.screenshot(path=str(shot))
            im = Image.open(shot).convert("RGB")
            bar = pg.get_by_role("button", name="Submit").first.bounding_box()
            left, top = box["x"], box["y"]
            right, bottom = left + box["width"], top + box["height"]
            assert right <= vw and bottom <= bar["y"], (name, box, bar)
            mid_x, mid_y = round((left + right) / 2), round((top + bottom) / 2)
            for edge, (x, y) in {"left": (left + 1, mid_y), "right": (right - 2, mid_y),
                                 "top": (mid_x, top + 1), "bottom": (mid_x, bottom - 2)}.items():  # fmt: skip
                r, g, b = im.getpixel((round(x), round(y)))
                assert r > 200 and g < 80 and b < 80, f"{name} at {viewport}: the {edge} edge is hidden ({box})"
            # and drawn no larger than the frame it sits in: what clips it is the stage around it, not the window
            stage = _stage_box(pg)
            assert stage is None or (
                left >= stage["x"] - 1 and top >= stage["y"] - 1 and right <= stage["x"] + stage["width"] + 1
                and bottom <= stage["y"] + stage["height"] + 1
            ), (name, viewport, box, stage)  # fmt: skip
            # as large as the window allows: bounded by the column's width or by the window's height
            cols = _layout(pg)
            max_w, max_h = cols["sdg-image"]["width"] - 42, vh - IMAGE_MAX_HEIGHT_OFFSET_PX
            assert box["width"] >= max_w - 3 or box["height"] >= max_h - 3, (name, viewport, box, max_w, max_h)
            assert cols["sdg-fields"]["width"] == FIELDS_WIDTH_PX and cols["sdg-image"]["width"] >= (
                vw - FIELDS_WIDTH_PX - (300 if name.startswith("task") else 60)
            ), (name, viewport, cols)  # the task list (about 240 px), gaps and paddings are all that is left
            natural = pg.evaluate("() => document.querySelector(\"img[src^='blob:']\").naturalWidth")
            figures[name] = {
                "shown": [round(box["width"]), round(box["height"])], "scale": round(box["width"] / natural, 3),
                "share_of_window": round(box["width"] * box["height"] / (vw * vh), 3),
            }  # fmt: skip
    LAYOUT.mkdir(parents=True, exist_ok=True)
    (LAYOUT / f"image-{vw}x{vh}.json").write_text(json.dumps(figures, indent=1) + "\n")
    print(f"image share of the window at {vw}x{vh}:", {k: v["share_of_window"] for k, v in figures.items()})


_ON_TOP = """([sel, text]) => {
    const el = Array.from(document.querySelectorAll(sel)).find(
        e => e.offsetParent !== null && (!text || e.innerText.trim() === text));
    if (!el) return null;
    const r = el.getBoundingClientRect();
    const top = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
    return {x: r.x, y: r.y, width: r.width, height: r.height, on_top: !!top && (top === el || el.contains(top)),
            text: el.innerText || ''};
}"""
FIELDS = {
    "prompt": ".sdg-caption", "metadata": ".sdg-about", "label artifact": ".sdg-fields .lsf-label:first-of-type",
    "label misalignment": ".sdg-fields .lsf-label:last-of-type", "description": ".sdg-fields textarea",
    "add": ".sdg-fields .lsf-text-area button", "hint": ".sdg-fields .lsf-text-area p.italic",
    "importance": ".sdg-fields input[type=number]", "submit": "button",
}  # fmt: skip


@pytest.mark.parametrize("viewport", VIEWPORTS, ids=lambda v: f"{v[0]}x{v[1]}")
def test_the_prompt_and_a_selected_boxs_fields_are_in_view_and_on_top(browser, ls_server, project, viewport):
    """With a box selected and a long prompt (the square image), in the task list's editor and in Label All Tasks:
    the prompt, the metadata, both labels, the description with its Add button, the importance and Submit are each
    the topmost element at their centre, inside the window and above the bottom bar, with no scrolling; the Add hint
    stays on one line. A record with no generator or seed shows only its id; no thumbnail in the task list is cut."""
    vw, vh = viewport
    url = f"{project['url']}/projects/{project['id']}/data?labeling=1"
    with _own_page(browser, viewport, f"fields-{vw}") as pg:
        _login(pg, project["url"], ADMIN["LABEL_STUDIO_USERNAME"], ADMIN["LABEL_STUDIO_PASSWORD"])
        _open_task(pg, project, "tall")
        assert pg.evaluate(_ON_TOP, [".sdg-about", ""])["text"].strip() == "id tall"
        # the task list's thumbnails (the wide one included) end before the editor starts: none is cut
        cut = pg.evaluate(
            """() => { const edge = document.querySelector('.lsf-editor').getBoundingClientRect().x;
                return Array.from(document.querySelectorAll('.lsf-table__cell img'))
                    .map(i => i.getBoundingClientRect()).filter(r => r.right > edge + 1).length; }"""
        )
        assert cut == 0 and pg.locator(".lsf-table__cell img").count() == len(SIZES), cut
        for view, open_view in [("task", lambda: _open_task(pg, project, "square")),
                                ("stream", lambda: (pg.goto(url), _image_box(pg))[1])]:  # fmt: skip
            box = open_view()
            start, end = _at(box, 0.3, 0.3), _at(box, 0.5, 0.5)
            _draw(pg, "1", start, end)
            _select_region(pg, start, end)
            bar = pg.get_by_role("button", name="Submit").first.bounding_box()
            assert pg.evaluate("() => document.scrollingElement.scrollTop") == 0
            for field, sel in FIELDS.items():
                got = pg.evaluate(_ON_TOP, [sel, "Submit" if field == "submit" else ""])
                assert got is not None, f"{view} at {viewport}: no {field} ({sel})"
                assert got["on_top"], f"{view} at {viewport}: the {field} is covered at its centre ({got})"
                bottom = got["y"] + got["height"]
                assert got["y"] >= 0 and got["x"] + got["width"] <= vw and (field == "submit" or bottom <= bar["y"]), (
                    f"{view} at {viewport}: the {field} is not in view above the bottom bar ({got}, bar {bar})"
                )
            meta = pg.evaluate(_ON_TOP, [FIELDS["metadata"], ""])["text"].strip()
            assert meta == "Z-Image-Turbo \u00b7 seed 7 \u00b7 id square", meta
            assert pg.evaluate(_ON_TOP, [FIELDS["hint"], ""])["height"] <= 24  # one line
            assert pg.evaluate(_ON_TOP, [FIELDS["add"], ""])["text"].strip() == "Add"
            pg.keyboard.press("Escape")


def test_an_invited_annotator_sees_the_project_and_a_stranger_cannot_sign_up(browser, project):
    url = project["url"]
    for who in ("invited", "stranger"):  # each in a browser of their own
        with _own_page(browser, (1280, 720), f"signup-{who}") as pg:
            if who == "invited":
                pg.goto(invite_link(project["url"], TOKEN))
                pg.fill("input[name=email]", "second@sdg.test")
                pg.fill("input[name=password]", "Second-annotator-1")
                pg.locator("button[type=submit]").first.click()
                pg.wait_for_url(lambda u: "/user/signup" not in u)
                pg.goto(f"{url}/projects/")
                pg.get_by_text(project["conn"].cfg.project_title).first.wait_for()
            else:
                pg.goto(f"{url}/user/signup/")
                pg.fill("input[name=email]", "stranger@sdg.test")
                pg.fill("input[name=password]", "Stranger-password-1")
                with pg.expect_response(lambda r: "/user/signup" in r.url and r.request.method == "POST") as posted:
                    pg.locator("button[type=submit]").first.click()
                assert posted.value.status == 403
    emails = {u.email for u in project["conn"].client.users.list()}
    assert "second@sdg.test" in emails and "stranger@sdg.test" not in emails


def test_the_importance_field_is_labelled_and_a_new_box_can_open_its_fields_at_once(browser, project):
    """The importance field says what it takes; with the editor setting the guidelines name ("Select region after
    creating it", kept per browser), a box just drawn shows its fields without another click."""
    with _own_page(browser, (1400, 900), "select-after-create") as pg:
        _login(pg, project["url"], ADMIN["LABEL_STUDIO_USERNAME"], ADMIN["LABEL_STUDIO_PASSWORD"])
        pg.evaluate("() => localStorage.setItem('labelStudio:settings', JSON.stringify({selectAfterCreate: true}))")
        box = _open_task(pg, project, "square")
        start, end = _at(box, 0.2, 0.2), _at(box, 0.5, 0.5)
        _draw(pg, "1", start, end)
        pg.locator("textarea").first.wait_for(state="visible", timeout=5_000)  # no click on the box
        pg.get_by_text("Importance, 1 to 100").first.wait_for(state="visible")
        _describe(pg, "two left feet", 65)
        _submit(pg)
    (d,) = _pull(project)["square"]["defects"]
    assert (d["label"], d["importance"], d["description"]) == ("artifact", 65, "two left feet")


def test_a_gold_task_looks_like_any_other_to_the_annotator(browser, project, monkeypatch, tmp_path):
    """An invited annotator opens an ordinary task and a gold task of the same size: the same headers, the same
    metadata line form, the same tabs, the same image size, no prefill on either, and the same task fields through
    the API they can call."""
    import re

    from annotation.push import server_tasks
    from annotation.queue import add_gold
    from annotation.testkit import join

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    conn = project["conn"]
    conn.cfg.work_dir = str(tmp_path / "work")
    images = Path(conn.cfg.image_root)
    tag = f"g{project['id']}"
    path = _bordered_images(images, tag, {"square-2": (1024, 1024)})
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[0]["defects"] = [{"box_2d": [100, 100, 300, 300], "label": "artifact", "description": "x", "importance": 5}]
    path.write_text(json.dumps(rows[0]) + "\n")
    assert add_gold(conn, path)["gold_added"] == 1
    tasks = server_tasks(conn, project["id"])
    email, password = f"gold-viewer-{project['id']}@sdg.test", "Gold-viewer-pass-1"
    api = join(project["url"], invite_link(project["url"], TOKEN), email, password)
    seen = {}
    with _own_page(browser, (1400, 900), "gold-looks-ordinary") as pg:
        _login(pg, project["url"], email, password)
        for name in ("square", "square-2"):
            pg.goto(f"{project['url']}/projects/{project['id']}/data?tab=1&task={tasks[name]}")
            _image_box(pg)
            seen[name] = pg.evaluate(
                """() => ({
                    headers: Array.from(document.querySelectorAll('.sdg-fields h4')).map(h => h.innerText),
                    about: document.querySelector('.sdg-about').innerText.trim(),
                    tabs: document.querySelectorAll('[class*=annotation-button]').length,
                    size: (i => [i.naturalWidth, i.naturalHeight])(document.querySelector("img[src^='blob:']")),
                    regions: document.querySelectorAll('[class*=region-item], [class*=outliner-item]').length,
                })"""
            )
            seen[name]["api"] = api.get(f"/api/tasks/{tasks[name]}").json()
    o, g = seen["square"], seen["square-2"]
    for key in ("headers", "tabs", "size", "regions"):
        assert o[key] == g[key], (key, o[key], g[key])
    form = re.compile(r"^Z-Image-Turbo \u00b7 seed 7 \u00b7 id [\w-]+$")
    assert form.match(o["about"]) and form.match(g["about"]), (o["about"], g["about"])
    assert set(o["api"]["data"]) == set(g["api"]["data"]) and set(o["api"]["meta"]) == set(g["api"]["meta"])
    assert [p["result"] for p in o["api"]["predictions"]] == [p["result"] for p in g["api"]["predictions"]] == [[]]
    assert "gold" not in json.dumps(g["api"]["data"]).lower()
