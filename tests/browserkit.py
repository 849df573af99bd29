"""What the browser tests share: where Chromium is, and why they are skipped when it or Playwright is missing."""

from __future__ import annotations

import os
import shutil

import pytest


def chromium() -> str | None:
    return os.environ.get("SDG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _why_not() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "no Playwright in this environment (make browser installs it)"
    return None if chromium() else "no Chromium on PATH (make browser: apt-get install -y chromium)"


WHY_NOT = _why_not()
needs_browser = pytest.mark.skipif(WHY_NOT is not None, reason=f"browser tests skipped: {WHY_NOT}")
