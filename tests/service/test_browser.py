"""The review web UI in a real browser: Playwright driving Debian's Chromium, end to end.

Upload a photo (with SIFT re-ranking), review the candidates and the drawings of their matched
keypoints, confirm with the keyboard, see the individual's history
update, undo. Skipped only when Chromium is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.service.conftest import API_KEY
from tests.service.live import live_server
from wildreid.service import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(),
    reason="Debian's chromium is not installed (apt-get install -y chromium; .ci/run does it)",
)


def test_upload_review_confirm_and_see_the_history(catalogue_dir: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    app = create_app(catalogue_dir, api_key=API_KEY)
    photo = tmp_path / "survey/photos/ind2/1.png"
    with live_server(app) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(base + "/")
            page.fill("#api-key", API_KEY)
            page.fill("#who-input", "ranger ann")
            page.click("#login")
            expect(page.locator("#who")).to_have_text("ranger ann")

            page.set_input_files("#files", str(photo))
            page.fill("input[name=location]", "north")
            page.select_option("#rerank", "sift")
            page.click("#upload")
            page.wait_for_url("**/ui/queries/*")
            query_id = page.url.rsplit("/", 1)[-1]
            expect(page.locator("#filters")).to_contain_text("location=north")
            expect(page.locator("#proposed")).to_have_text("known")
            first = page.locator(".candidate").first
            expect(first).to_have_attribute("data-identity", "ind2")
            expect(first).to_have_class("candidate selected")
            assert page.locator(".candidate").count() == 2  # ind0 and ind2 live in the north
            expect(page.locator("#rerank-method")).to_have_text("sift")
            drawing = first.locator("img.evidence")  # query and candidate, matches drawn
            expect(drawing).to_be_visible()
            drawing.scroll_into_view_if_needed()
            page.wait_for_function(
                "() => [...document.querySelectorAll('img.evidence')]"
                ".every(i => i.complete && i.naturalWidth > 0)"
            )
            size = drawing.evaluate("i => [i.naturalWidth, i.naturalHeight]")
            assert size[0] > size[1] > 200

            page.keyboard.press("1")
            page.keyboard.press("s")  # same individual as candidate 1
            page.wait_for_url("**/ui/individuals/ind2*")
            history = page.locator("#history")
            expect(history).to_contain_text("ranger ann")
            expect(history).to_contain_text("same")
            expect(page.locator(f"#timeline img[data-image='{query_id}']")).to_have_count(1)

            page.goto(f"{base}/ui/queries/{query_id}")
            expect(page.locator("#placed")).to_contain_text("ind2")
            page.keyboard.press("u")  # undo
            page.wait_for_load_state()
            expect(page.locator("#query-log")).to_contain_text("undo")
            page.goto(f"{base}/ui/individuals/ind2")
            expect(page.locator(f"#timeline img[data-image='{query_id}']")).to_have_count(0)
            expect(page.locator("#history")).to_contain_text("undo")
        finally:
            browser.close()
