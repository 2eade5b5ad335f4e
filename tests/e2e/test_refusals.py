"""A web app on another origin, as the README sets it up: what works, and what a refusal shows.

The widget is loaded from Clarion by a page served from a second origin (a real HTTP server on
another port), so Chromium applies CORS and sends its Origin exactly as for a developer's app.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from browsers import Site, launch_chromium
from playwright.sync_api import Browser, Page, expect

from harness.server import Server

STATUS = "[data-testid=clarion-status]"
ERROR = "[data-testid=clarion-error]"
SHOTS = Path(os.environ.get("CLARION_TEST_SHOTS", "/tmp/clarion-shots"))

PAGE = """<!doctype html><html lang="en"><body>
<script type="module" src="{server}/static/clarion-inbox.js"></script>
<clarion-inbox server="{server}"></clarion-inbox>
<script type="module">
  window.tokenCalls = 0;
  document.querySelector("clarion-inbox").getToken = () => {{
    window.tokenCalls += 1;
    return fetch("/my-app/clarion-token").then((r) => r.text());
  }};
</script></body></html>"""


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    yield from launch_chromium()


@pytest.fixture(scope="module")
def listed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("listed"), {"CLARION_ALLOWED_ORIGINS": "https://app.example.com"}
    ).start()
    yield srv
    srv.kill(signal.SIGTERM)


def app_page(chromium: Browser, server: Server, token: str) -> tuple[Site, Page]:
    """The README's snippet on a second origin, its backend answering `token` plus a newline
    (`clarion token demo > file`, then served as text)."""
    site = Site(
        {
            "/": lambda: ("text/html", PAGE.format(server=server.url).encode()),
            "/my-app/clarion-token": lambda: ("text/plain", (token + "\n").encode()),
        }
    )
    page = chromium.new_page()
    page.goto(site.url + "/")
    return site, page


def test_readme_snippet_goes_live_from_another_origin(chromium: Browser, server: Server) -> None:
    site, page = app_page(chromium, server, server.token("demo"))
    try:
        expect(page.locator(STATUS)).to_have_attribute("data-state", "live", timeout=15_000)
        server.publish(users=["demo"], title="From another origin")
        toast = page.locator("[data-testid=clarion-toast]")
        expect(toast).to_contain_text("From another origin", timeout=10_000)
    finally:
        page.close()
        site.close()


def test_a_refused_token_is_shown_and_not_retried(chromium: Browser, server: Server) -> None:
    forged = Server.token(server, "demo")[:-4] + "AAAA"  # another signature
    site, page = app_page(chromium, server, forged)
    try:
        expect(page.locator(STATUS)).to_have_attribute("data-state", "refused", timeout=15_000)
        assert page.evaluate("window.tokenCalls") == 2  # the first token and one fresh one
        time.sleep(3)
        assert page.evaluate("window.tokenCalls") == 2  # and then it waits
        assert page.locator("[data-testid=clarion-bell]").get_attribute("title") == (
            "Not connected: token refused: invalid token: Signature verification failed"
        )
        page.locator("[data-testid=clarion-bell]").click()
        expect(page.locator(STATUS)).to_have_text("Not connected: token refused")
        expect(page.locator(ERROR)).to_contain_text("Signature verification failed")
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "refused-token.png"))
        # A page that gets a working token source is live again.
        good = server.token("demo")
        page.evaluate(
            "(t) => { document.querySelector('clarion-inbox').getToken = () => t; }", good
        )
        expect(page.locator(STATUS)).to_have_attribute("data-state", "live", timeout=15_000)
        expect(page.locator(ERROR)).to_be_hidden()
    finally:
        page.close()
        site.close()


def test_a_refused_origin_is_shown(chromium: Browser, listed: Server) -> None:
    site, page = app_page(chromium, listed, listed.token("demo"))
    try:
        expect(page.locator(STATUS)).to_have_attribute("data-state", "refused", timeout=15_000)
        page.locator("[data-testid=clarion-bell]").click()
        expect(page.locator(STATUS)).to_have_text("Not connected: origin or user refused")
        expect(page.locator(ERROR)).to_contain_text("origin not allowed")
        assert page.evaluate("window.tokenCalls") == 1
    finally:
        page.close()
        site.close()
