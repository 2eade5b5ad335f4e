"""The demo page and `<clarion-inbox>` in a real Chromium, driven by Playwright.

One `clarion serve --demo` and one browser per module; every test opens its own context, and
starts from an empty inbox for the user `demo`. The widget's shadow root is open, so CSS
locators reach its `data-testid`s directly.

`CLARION_SCREENSHOTS=1` also writes the screenshots in docs/img/.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browsers import launch_chromium
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Route,
    WebSocketRoute,
    expect,
)

from harness.server import Server
from harness.util import eventually, send

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"

BELL = "[data-testid=clarion-bell]"
BADGE = "[data-testid=clarion-badge]"
CARD = "[data-testid=clarion-card]"
STATUS = "[data-testid=clarion-status]"
CRITICAL = "[data-testid=clarion-critical]"
ACK = "[data-testid=clarion-ack]"

XSS = '<img src=x onerror="window.__xss=1;alert(1)">'

# A stand-in for the browser's Notification that records what the widget shows.
NOTIFICATION_STUB = """
window.__notifications = [];
window.Notification = class Notification {
  static get permission() { return 'granted'; }
  static requestPermission() { return Promise.resolve('granted'); }
  constructor(title, options = {}) {
    window.__notifications.push({ title, body: options.body, tag: options.tag });
  }
  close() {}
};
"""


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("browser")).start("--demo")
    yield srv
    srv.kill(signal.SIGTERM)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from launch_chromium()


@pytest.fixture(autouse=True)
def empty_inbox(demo: Server) -> None:
    """Every test starts with nothing in the inbox (an unread critical would open its modal)."""
    if demo.proc is None or demo.proc.poll() is not None:
        demo.start("--demo")  # a test that restarts the server died half-way
    api(demo, "POST", "/v1/me/notifications/archive-all")


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    yield ctx
    ctx.close()


# ---- helpers ---------------------------------------------------------------------------------


def api(server: Server, method: str, path: str) -> Any:
    """The inbox API as the user `demo`."""
    response = httpx.request(method, server.url + path, headers=server.me("demo"), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def send_demo(server: Server, **fields: Any) -> str:
    """Publish to the user `demo`."""
    return send(server, users=["demo"], **fields)


def open_demo(context: BrowserContext, server: Server, query: str = "") -> Page:
    """A tab on the demo page, live and with the first inbox page loaded."""
    page = context.new_page()
    with page.expect_response(
        lambda r: "/v1/me/notifications" in r.url and r.request.method == "GET", timeout=15_000
    ):
        page.goto(server.url + "/" + query)
    expect(page.locator(STATUS)).to_have_attribute("data-state", "live", timeout=15_000)
    return page


def card(page: Page, notification_id: str) -> Any:
    return page.locator(f'{CARD}[data-id="{notification_id}"]')


def badge_count(page: Page) -> int:
    return int(page.locator(BADGE).get_attribute("data-count") or 0)


def record_events(page: Page) -> None:
    """Keep every notification the client emits, and its status changes, in `window`."""
    page.evaluate(
        """() => {
          window.__seen = [];
          window.__states = [];
          window.clarion.on('notification', (d) => window.__seen.push(
            { id: d.notification.id, replay: d.replay }));
          window.clarion.on('status', (s) => window.__states.push(s.state));
        }"""
    )


# ---- tests -----------------------------------------------------------------------------------


def test_badge_rises_within_a_second(context: BrowserContext, demo: Server) -> None:
    page = open_demo(context, demo)
    expect(page.locator(BADGE)).to_be_hidden()
    page.evaluate(
        """() => {
          window.__badge = [];
          document.getElementById('inbox').addEventListener('clarion-unread',
            (e) => window.__badge.push({ count: e.detail.count, at: Date.now() }));
        }"""
    )
    sent_at = time.time() * 1000
    send_demo(demo, title="Ping")
    expect(page.locator(BADGE)).to_have_text("1", timeout=3000)
    shown_at = page.evaluate("() => window.__badge.find((b) => b.count === 1).at")
    elapsed = shown_at - sent_at
    assert elapsed < 1000, f"badge took {elapsed:.0f} ms"


def test_bell_opens_the_card(context: BrowserContext, demo: Server) -> None:
    page = open_demo(context, demo)
    nid = send_demo(
        demo,
        type="message",
        title="New message",
        body="Lunch at 12:30? The new ramen place opened next door.",
        actor={"name": "Alice Martin"},
        url="/#messages/42",
    )
    expect(page.locator(BADGE)).to_have_text("1")
    page.locator(BELL).click()
    expect(page.locator("[data-testid=clarion-panel]")).to_be_visible()
    item = card(page, nid)
    expect(item).to_be_visible()
    expect(item).to_have_attribute("data-read", "false")
    expect(item).to_have_attribute("data-type", "message")
    expect(item.locator(".title")).to_have_text("New message")
    expect(item.locator(".actor")).to_have_text("Alice Martin")
    expect(item.locator(".body")).to_have_text(
        "Lunch at 12:30? The new ramen place opened next door."
    )
    expect(page.locator(CARD)).to_have_count(1)


def test_mark_read_updates_both_tabs(context: BrowserContext, demo: Server) -> None:
    first = open_demo(context, demo)
    second = open_demo(context, demo)
    older = send_demo(demo, title="Older")
    newer = send_demo(demo, title="Newer")
    for page in (first, second):
        expect(page.locator(BADGE)).to_have_text("2")
        expect(card(page, newer)).to_have_attribute("data-read", "false")

    first.locator(BELL).click()
    card(first, newer).locator("[data-testid=clarion-toggle-read]").click()

    for page in (first, second):
        expect(page.locator(BADGE)).to_have_text("1")
        expect(card(page, newer)).to_have_attribute("data-read", "true")
        expect(card(page, older)).to_have_attribute("data-read", "false")
    assert api(demo, "GET", "/v1/me/unread-count")["unread"] == 1


def test_a_recalled_notification_leaves_the_widget(context: BrowserContext, demo: Server) -> None:
    """Recall (docs/control.md): the card goes and the badge drops, for a personal
    notification (the event carries the count) and a broadcast (the client asks for it)."""
    page = open_demo(context, demo)
    keep = send_demo(demo, title="Keep")
    oops = send_demo(demo, title="Oops")
    everyone = send(demo, all=True, title="Everyone")
    expect(page.locator(BADGE)).to_have_text("3")
    page.locator(BELL).click()
    expect(card(page, everyone)).to_be_visible()
    for nid in (oops, everyone):
        r = httpx.delete(
            f"{demo.url}/v1/notifications/{nid}",
            headers={"Authorization": f"Bearer {demo.api_key}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
    expect(card(page, oops)).to_have_count(0)
    expect(card(page, everyone)).to_have_count(0)
    expect(page.locator(BADGE)).to_have_text("1")
    expect(card(page, keep)).to_be_visible()


def test_opening_the_inbox_marks_what_it_shows_seen(context: BrowserContext, demo: Server) -> None:
    """`badge="unseen"` counts what was never shown; opening the dropdown marks the cards it
    shows seen (the server sets `seen_at`, other tabs follow), while they stay unread."""
    first, second = open_demo(context, demo), open_demo(context, demo)
    for page in (first, second):
        page.evaluate("() => document.getElementById('inbox').setAttribute('badge', 'unseen')")
    ids = [send_demo(demo, title="One"), send_demo(demo, title="Two")]
    for page in (first, second):
        expect(page.locator(BADGE)).to_have_text("2")
    first.locator(BELL).click()
    for page in (first, second):
        expect(page.locator(BADGE)).to_be_hidden()
    assert api(demo, "GET", "/v1/me/unread-count") == {"unread": 2, "unseen": 0}
    items = api(demo, "GET", "/v1/me/notifications")["items"]
    assert {i["id"] for i in items if i["seen_at"]} == set(ids)
    for page in (first, second):  # the unread count is still there for who wants it
        assert page.evaluate("() => document.getElementById('inbox').unread") == 2
    second.evaluate("() => document.getElementById('inbox').setAttribute('badge', 'unread')")
    expect(second.locator(BADGE)).to_have_text("2")
    third = send_demo(demo, title="Three")  # arrives while the first tab's dropdown is open
    expect(card(first, third)).to_be_visible()
    expect(second.locator(BADGE)).to_have_text("3")
    expect(first.locator(BADGE)).to_be_hidden()
    eventually(
        lambda: api(demo, "GET", "/v1/me/unread-count") == {"unread": 3, "unseen": 0},
        what="the card shown in the open dropdown marked seen",
    )


def test_server_restart_delivers_exactly_once(context: BrowserContext, demo: Server) -> None:
    page = open_demo(context, demo)
    record_events(page)
    before = send_demo(demo, title="Before the restart")
    expect(page.locator(BADGE)).to_have_text("1")

    demo.kill(signal.SIGKILL)
    expect(page.locator(STATUS)).not_to_have_attribute("data-state", "live")
    demo.start("--demo")
    # Published before the page has had a chance to reconnect (its backoff starts at 0-500 ms
    # and doubles): it gets them from its cursor.
    during = [send_demo(demo, title=f"After the restart {i}") for i in range(3)]

    # Backoff with jitter after a failed attempt: 0-0.5 s, 0-1 s, 0-2 s, ... (capped at 30 s).
    expect(page.locator(STATUS)).to_have_attribute("data-state", "live", timeout=30_000)
    expect(page.locator(CARD)).to_have_count(4)
    expect(page.locator(BADGE)).to_have_text("4")
    for nid in [before, *during]:
        expect(card(page, nid)).to_have_count(1)
    seen = page.evaluate("() => window.__seen.map((s) => s.id)")
    assert sorted(seen) == sorted([before, *during]), seen
    assert "connecting" in page.evaluate("() => window.__states")

    # The server kept them too, once each.
    page.reload()
    expect(page.locator(STATUS)).to_have_attribute("data-state", "live")
    expect(page.locator(CARD)).to_have_count(4)
    expect(page.locator(BADGE)).to_have_text("4")


@pytest.mark.parametrize("expected", ["sse", "poll"])
def test_transport_fallback(context: BrowserContext, demo: Server, expected: str) -> None:
    refused: list[str] = []

    def refuse_websocket(ws: WebSocketRoute) -> None:
        refused.append(ws.url)
        ws.close(code=1011, reason="blocked by the test")

    def refuse(route: Route) -> None:
        refused.append(route.request.url)
        route.abort()

    context.route_web_socket("**/v1/ws", refuse_websocket)
    if expected == "poll":
        context.route("**/v1/sse?**", refuse)

    page = open_demo(context, demo)
    assert page.evaluate("() => window.clarion.transport") == expected
    assert any(url.endswith("/v1/ws") for url in refused)
    if expected == "poll":
        assert any("/v1/sse?" in url for url in refused)
    names = {"sse": "Server-Sent Events", "poll": "long-polling"}
    expect(page.locator(STATUS)).to_have_text(f"Live · {names[expected]}")

    nid = send_demo(demo, title=f"Over {expected}")
    expect(page.locator(BADGE)).to_have_text("1", timeout=5000)
    expect(card(page, nid)).to_have_count(1)
    assert page.evaluate("() => window.clarion.transport") == expected


def test_xss_payloads_stay_text(context: BrowserContext, demo: Server) -> None:
    # `type` is checked by the server (letters, digits and `_.:-` only).
    rejected = demo.publish(users=["demo"], type=XSS, title="x")
    assert rejected.status_code == 422, rejected.text
    # So are links: only http(s) and relative ones are stored (the client checks them again).
    for link in (
        {"url": "javascript:alert(4)"},
        {"icon": 'javascript:alert(5)//"><img src=x onerror=alert(6)>'},
        {"actor": {"name": "a", "avatar": "javascript:alert(3)"}},
        {"actions": [{"id": "a", "label": "A", "url": "javascript:alert(7)"}]},
    ):
        rejected = demo.publish(users=["demo"], title="x", **link)
        assert rejected.status_code == 422, rejected.text

    page = open_demo(context, demo)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    start_url = page.url

    fields: dict[str, Any] = {
        "type": "message",
        "title": f"{XSS} title",
        "body": f"{XSS} body <script>alert(2)</script>",
        "actor": {"name": f"{XSS} actor"},
        "actions": [{"id": "a", "label": f"{XSS}"}],
        "data": {"html": XSS},
    }
    nid = send_demo(demo, **fields)
    toast = page.locator(f'[data-testid=clarion-toast][data-id="{nid}"]')
    expect(toast.locator(".title")).to_contain_text("<img src=x onerror=")
    expect(toast.locator("a, img, script")).to_have_count(0)

    page.locator(BELL).click()
    item = card(page, nid)
    expect(item.locator(".title")).to_have_text(f"{XSS} title")
    expect(item.locator(".actor")).to_have_text(f"{XSS} actor")
    expect(item.locator(".body")).to_have_text(f"{XSS} body <script>alert(2)</script>")
    expect(item.locator("[data-testid=clarion-action]")).to_have_text(XSS)
    expect(item.locator("img, script, a, [onerror]")).to_have_count(0)
    expect(item.locator("[href]")).to_have_count(0)

    item.locator(".main").click()
    expect(item).to_have_attribute("data-read", "true")
    item.locator("[data-testid=clarion-action]").click()

    # The critical modal renders the same fields.
    crit = send_demo(demo, **{**fields, "priority": "critical"})
    modal = page.locator(CRITICAL)
    expect(modal).to_be_visible()
    expect(modal).to_have_attribute("data-id", crit)
    expect(modal.locator("#crit-title")).to_have_text(f"{XSS} title")
    expect(modal.locator("[data-testid=clarion-critical-open]")).to_be_hidden()
    expect(modal.locator("img, script, [onerror], [href]")).to_have_count(0)
    page.locator(ACK).click()
    expect(modal).to_be_hidden()

    page.wait_for_timeout(200)  # time for an injected handler to have run, had there been one
    assert page.url == start_url
    assert dialogs == []
    assert page.evaluate("() => window.__xss") is None
    assert page.locator("clarion-inbox img").count() == 0


def test_critical_needs_acknowledgement(context: BrowserContext, demo: Server) -> None:
    page = open_demo(context, demo)
    nid = send_demo(
        demo,
        type="system_alert",
        priority="critical",
        title="Payment service degraded",
        body="Card payments are failing for 12% of requests.",
        actor={"name": "Acme Ops"},
    )
    modal = page.locator(CRITICAL)
    expect(modal).to_be_visible()
    expect(modal).to_have_attribute("data-id", nid)
    expect(modal).to_have_attribute("role", "alertdialog")
    expect(modal.locator("#crit-title")).to_have_text("Payment service degraded")
    assert page.evaluate(
        "() => document.getElementById('inbox').shadowRoot.querySelector('dialog').open"
    )
    expect(page.locator(ACK)).to_be_focused()
    expect(page.locator(BADGE)).to_have_text("1")

    page.keyboard.press("Escape")  # does not dismiss it
    expect(modal).to_be_visible()

    page.locator(ACK).click()
    expect(modal).to_be_hidden()
    expect(page.locator(BADGE)).to_be_hidden()
    expect(card(page, nid)).to_have_attribute("data-read", "true")
    assert api(demo, "GET", "/v1/me/unread-count")["unread"] == 0

    # Reloading does not bring it back: it is read.
    page.reload()
    expect(page.locator(STATUS)).to_have_attribute("data-state", "live")
    expect(card(page, nid)).to_have_attribute("data-read", "true")
    expect(modal).to_be_hidden()


def test_hidden_tab_raises_a_desktop_notification(browser: Browser, demo: Server) -> None:
    context = browser.new_context()
    try:
        context.grant_permissions(["notifications"], origin=demo.url)
        context.add_init_script(NOTIFICATION_STUB)
        page = open_demo(context, demo)

        # Visible: a toast, no system notification.
        shown = send_demo(demo, priority="high", title="Seen in the page")
        expect(page.locator(f'[data-testid=clarion-toast][data-id="{shown}"]')).to_be_visible()

        page.evaluate(
            """() => {
              Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
              Object.defineProperty(document, 'visibilityState',
                { configurable: true, get: () => 'hidden' });
              document.dispatchEvent(new Event('visibilitychange'));
            }"""
        )
        send_demo(demo, priority="normal", title="Normal: no system notification")
        nid = send_demo(demo, priority="high", title="Server on fire", body="db-2 is at 98% disk")
        page.wait_for_function("() => window.__notifications.length > 0")
        notes = page.evaluate("() => window.__notifications")
        assert notes == [{"title": "Server on fire", "body": "db-2 is at 98% disk", "tag": nid}]
        expect(page.locator(BADGE)).to_have_text("3")
    finally:
        context.close()


# ---- screenshots for the docs ----------------------------------------------------------------


def inbox_sample(server: Server) -> None:
    """A few notifications of every kind, oldest first; two of them read."""
    deploy = send_demo(
        server,
        type="deploy",
        priority="low",
        title="Deploy finished",
        body="web@4f2c1a is live in production.",
        actor={"name": "CI"},
    )
    friend = send_demo(
        server,
        type="friend_request",
        priority="low",
        title="Bob Chen sent you a friend request",
        body="You have 12 friends in common.",
        actor={"name": "Bob Chen"},
    )
    send_demo(
        server,
        type="like",
        title="Carol liked your post",
        body="“Shipping the new dashboard today”",
        actor={"name": "Carol Diaz"},
        url="/#posts/7",
    )
    send_demo(
        server,
        type="message",
        title="New message",
        body="Lunch at 12:30? The new ramen place opened next door, and they have a vegan menu.",
        actor={"name": "Alice Martin"},
        url="/#messages/42",
        actions=[
            {"id": "reply", "label": "Reply", "url": "/#messages/42/reply"},
            {"id": "mute", "label": "Mute"},
        ],
    )
    send_demo(
        server,
        type="system_alert",
        priority="high",
        title="Disk usage above 90% on db-2",
        body="Free space will run out in about 6 hours at the current rate.",
        actor={"name": "Acme Ops"},
    )
    for nid in (deploy, friend):
        api(server, "POST", f"/v1/me/notifications/{nid}/read")


@pytest.mark.skipif(
    os.environ.get("CLARION_SCREENSHOTS") != "1", reason="set CLARION_SCREENSHOTS=1 to write them"
)
def test_screenshots(browser: Browser, demo: Server) -> None:
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    inbox_sample(demo)
    for scheme in ("light", "dark", "critical"):
        context = browser.new_context(
            viewport={"width": 1280, "height": 760},
            device_scale_factor=2,
            color_scheme="dark" if scheme == "dark" else "light",
            reduced_motion="reduce",
        )
        try:
            page = open_demo(context, demo)
            if scheme == "critical":
                send_demo(
                    demo,
                    type="system_alert",
                    priority="critical",
                    title="Payment service degraded",
                    body="Card payments are failing for 12% of requests. "
                    "The on-call engineer has been paged.",
                    actor={"name": "Acme Ops"},
                    url="/#status",
                )
                expect(page.locator(CRITICAL)).to_be_visible()
            else:
                page.locator(BELL).click()
                expect(page.locator(CARD)).to_have_count(5)
            page.mouse.move(0, 700)
            page.screenshot(path=DOCS_IMG / f"widget-{scheme}.png", animations="disabled")
        finally:
            context.close()


def test_collapsed_notifications_show_one_card(context: BrowserContext, demo: Server) -> None:
    page = open_demo(context, demo)
    page.locator(BELL).click()
    ids = [
        send_demo(
            demo,
            type="message",
            title=f"{name} replied",
            actor={"name": name},
            collapse_key="thread-7",
        )
        for name in ("Bob", "Carol", "Dan")
    ]
    item = card(page, ids[-1])
    expect(item.locator(".actor")).to_have_text("Dan and 2 others")
    expect(page.locator(CARD)).to_have_count(1)
    expect(page.locator(BADGE)).to_have_text("1")
    page.reload()
    expect(page.locator(STATUS)).to_have_attribute("data-state", "live", timeout=15_000)
    page.locator(BELL).click()
    expect(card(page, ids[-1]).locator(".actor")).to_have_text("Dan and 2 others")
    expect(page.locator(CARD)).to_have_count(1)


def test_preferences_panel_mutes_a_type(context: BrowserContext, demo: Server) -> None:
    page = open_demo(context, demo)
    promo = send_demo(demo, type="promo", title="50% off")
    page.locator(BELL).click()
    expect(card(page, promo)).to_be_visible()
    page.locator("[data-testid=clarion-settings]").click()
    box = page.locator("[data-testid=clarion-pref-in_app-promo]")
    expect(box).to_be_checked()
    box.uncheck()
    page.locator("[data-testid=clarion-prefs-save]").click()
    expect(page.locator("[data-testid=clarion-prefs-status]")).to_have_text("Saved")
    assert api(demo, "GET", "/v1/me/preferences")["types"]["promo"]["in_app"] is False
    page.locator("[data-testid=clarion-settings]").click()
    expect(card(page, promo)).to_have_count(0)
    send_demo(demo, type="promo", title="70% off")
    kept = send_demo(demo, type="message", title="Still here")
    expect(card(page, kept)).to_be_visible()
    expect(page.locator(CARD)).to_have_count(1)
    httpx.put(
        demo.url + "/v1/me/preferences",
        json={"types": {"promo": {"in_app": None}}},
        headers=demo.me("demo"),
        timeout=10,
    )


def test_following_a_topic_from_clarion_js(context: BrowserContext, demo: Server) -> None:
    page = open_demo(context, demo)
    page.locator(BELL).click()
    page.evaluate("() => window.clarion.follow('demo:releases')")
    first = demo.publish(topics=["demo:releases"], title="v2.0 is out").json()["id"]
    expect(card(page, first)).to_be_visible()
    topics = page.evaluate("() => window.clarion.topics()")
    assert topics == {"topics": [{"topic": "demo:releases", "granted": False}]}
    refused = page.evaluate(
        "() => window.clarion.follow('secret:plans').then(() => 'ok', (e) => e.status)"
    )
    assert refused == 403
    page.evaluate("() => window.clarion.unfollow('demo:releases')")
    page.wait_for_timeout(300)
    later = demo.publish(topics=["demo:releases"], title="v2.1 is out").json()["id"]
    kept = send_demo(demo, title="personal")
    expect(card(page, kept)).to_be_visible()
    expect(card(page, later)).to_have_count(0)
