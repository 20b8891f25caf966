"""The built site in a real browser: headless Chromium, opened from disk, networking off.

Uses Debian's Chromium (/usr/bin/chromium; `.ci/run` installs it when missing) through
Playwright, without Playwright's own browser download. For each page: no request may fail or
leave the disk, no JavaScript error may be raised, no dialog may open (a hostile docstring must
not run), and the plots (plotly's SVG) and bertviz's views (their SVG) must be drawn. Each page
is saved as a screenshot under the test's temporary directory (the path is printed).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from report_site import HOSTILE

from reports import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra: pip install -e '.[test]'")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt-get install chromium")

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions"]
PAGES = {  # page -> (plotly plots at least, bertviz SVGs at least, hostile text shown)
    "index.html": (2, 0, False),
    "runs/loff.html": (3, 0, False),
    "attn-diff/lora2-vs-loff.html": (5, 0, True),
    "attn-diff/lora2-vs-loff.a.query.html": (0, 2, True),
    "attn-diff/lora2-vs-loff.b.query.html": (0, 2, True),
    "qualitative/all.html": (2, 0, True),
    "attribute/loff.example500.html": (0, 0, True),
    "compare/lora2-vs-loff.html": (0, 0, False),
    "cka/lora2-vs-loff.html": (2, 0, True),
    "study/tiny.html": (0, 0, True),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory, report_runs) -> Path:
    return build_report(runs_dir=report_runs, out=tmp_path_factory.mktemp("browser-site") / "report").index.parent


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.mark.parametrize("page_path", list(PAGES))
def test_page_renders_offline(browser, site, page_path, tmp_path_factory):
    plots, bertviz, hostile = PAGES[page_path]
    context = browser.new_context(offline=True, viewport={"width": 1400, "height": 1000})
    outside, failed, errors, dialogs = [], [], [], []
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                  else (outside.append(route.request.url), route.abort()))
    page = context.new_page()
    page.on("requestfailed", lambda request: failed.append(f"{request.url}: {request.failure}"))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    try:
        page.goto((site / page_path).as_uri(), wait_until="load")
        if plots:
            page.wait_for_selector(".plotly-graph-div .main-svg", timeout=20_000)
        if bertviz:
            page.wait_for_selector(".bertviz svg", timeout=20_000)
        page.wait_for_timeout(300)
        shot = tmp_path_factory.mktemp("screenshots") / (page_path.replace("/", "_") + ".png")
        page.screenshot(path=str(shot))
        print(f"screenshot: {shot}")
        assert (outside, failed, errors, dialogs) == ([], [], [], [])
        assert page.locator(".plotly-graph-div .main-svg").count() >= plots
        assert page.locator(".bertviz svg").count() >= bertviz
        if hostile:
            assert HOSTILE.split("<!--")[0].strip() in page.text_content("body")  # shown as text, closed <details> too
    finally:
        context.close()
