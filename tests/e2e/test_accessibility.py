"""axe-core (from npm, injected by Playwright) finds no violations on the demo page and the
widget: light and dark, dropdown closed (toasts showing) and open, critical modal shown.

`scripts/ensure-axe` (run by `make test`) installs axe-core into tests/e2e/axe/.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browsers import launch_chromium
from playwright.sync_api import Browser, Page, expect

from harness.server import Server

AXE = Path(__file__).with_name("axe") / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = Path(os.environ.get("CLARION_TEST_SHOTS", "/tmp/clarion-shots"))
STATUS = "[data-testid=clarion-status]"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not AXE.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{AXE} is missing: run scripts/ensure-axe")
        pytest.skip("axe-core is not installed: run scripts/ensure-axe")
    yield from launch_chromium()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("a11y")).start("--demo")
    yield srv
    srv.kill(signal.SIGTERM)


def send(server: Server, **fields: Any) -> None:
    response = server.publish(users=["demo"], **fields)
    assert response.status_code == 201, response.text


def violations(page: Page, where: str) -> list[str]:
    """axe's findings on the whole page (open shadow roots included), one line each."""
    if not page.evaluate("() => 'axe' in window"):
        page.add_script_tag(path=str(AXE))
    found = page.evaluate("async () => (await axe.run(document)).violations")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"a11y-{where}.png"))
    return [
        f"{where}: {v['id']} ({v['impact']}) at {json.dumps(node['target'])}: "
        f"{node['failureSummary'].splitlines()[-1].strip()}"
        for v in found
        for node in v["nodes"]
    ]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_axe_violations(chromium: Browser, demo: Server, scheme: str) -> None:
    httpx.post(demo.url + "/v1/me/notifications/archive-all", headers=demo.me("demo"))
    context = chromium.new_context(
        viewport={"width": 1280, "height": 900},
        color_scheme=scheme,  # type: ignore[arg-type]
    )
    page = context.new_page()
    try:
        page.goto(demo.url + "/")
        expect(page.locator(STATUS)).to_have_attribute("data-state", "live", timeout=15_000)
        send(demo, priority="low", type="digest", title="Weekly summary", body="3 new followers")
        send(
            demo,
            type="message",
            title="New message",
            body="Lunch at 12:30?",
            actor={"name": "Alice Martin"},
            url="/#m",
            actions=[{"id": "reply", "label": "Reply", "url": "/#reply"}],
        )
        send(demo, type="system_alert", priority="high", title="Disk almost full", body="92%")
        toasts = page.locator("[data-testid=clarion-toast]")
        expect(toasts).to_have_count(2)
        found = violations(page, f"{scheme}-closed")

        page.locator("[data-testid=clarion-bell]").click()
        expect(page.locator("[data-testid=clarion-card]")).to_have_count(3)
        page.locator("[data-testid=clarion-card]").first.locator(
            "[data-testid=clarion-toggle-read]"
        ).click()  # a read card among unread ones
        found += violations(page, f"{scheme}-open")
        page.keyboard.press("Escape")

        send(demo, type="system_alert", priority="critical", title="Payments down", body="12%")
        expect(page.locator("[data-testid=clarion-critical]")).to_be_visible()
        found += violations(page, f"{scheme}-critical")
        page.locator("[data-testid=clarion-ack]").click()
    finally:
        context.close()
    assert found == [], "\n".join(found)
