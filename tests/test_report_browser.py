"""The stats report as a reader sees it, in a real browser (Chromium): every image loads, a Chinese description is
there as text, the filters hide what they should, and a thumbnail opens the full image."""

from __future__ import annotations

import json
from pathlib import Path

from tests.browserkit import chromium as _chromium
from tests.browserkit import needs_browser


pytestmark = needs_browser

SAMPLE = Path(__file__).resolve().parents[1] / "sdg_data" / "demo" / "sample" / "records.jsonl"


def test_the_report_reads_in_a_browser(tmp_path):
    from playwright.sync_api import sync_playwright

    from sdg_data.dataset.stats import dataset_stats, write_report

    report = write_report(dataset_stats(SAMPLE), tmp_path / "report.html")
    chinese = next(
        d["description"]
        for r in map(json.loads, SAMPLE.read_text().splitlines())
        for d in r["defects"]
        if any("\u4e00" <= c <= "\u9fff" for c in d["description"])
    )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=_chromium(), headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
        assert images and all(done and width > 0 for done, width in images), images
        text = page.inner_text(".gallery")
        cards = page.locator(".card")
        n = cards.count()
        shown = [c for c in range(n) if chinese in cards.nth(c).inner_text()]
        assert n >= 8 and shown, "no card shows the Chinese description as text"
        assert "clean: no defect" in text
        assert page.locator("table.t thead tr").first.count() == 1  # no empty index-name row above a header
        heads = page.eval_on_selector_all("table.t thead", "els => els.map(e => e.querySelectorAll('tr').length)")
        assert heads and all(h == 1 for h in heads), heads
        width = page.eval_on_selector(".plots img", "e => e.getBoundingClientRect().width")
        body = page.eval_on_selector("body", "e => e.getBoundingClientRect().width")
        assert width > 0.85 * (body - 40), (width, body)  # plots at page width
        page.select_option("select[data-filter='label']", "clean")
        visible = [c for c in range(n) if cards.nth(c).is_visible()]
        assert visible and all("clean: no defect" in cards.nth(c).inner_text() for c in visible)
        page.select_option("select[data-filter='label']", "")
        assert all(cards.nth(c).is_visible() for c in range(n))
        cards.nth(0).locator("a").click()
        full = page.locator(".full:target img")
        assert full.is_visible() and full.evaluate("e => e.naturalWidth") >= 768
        browser.close()
