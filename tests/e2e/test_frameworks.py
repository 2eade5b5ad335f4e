"""The React and Vue bindings, as the examples use them, in a real Chromium against a real server.

examples/react and examples/vue are bundled with esbuild from npm (tests/e2e/frontends.py), the
Clarion package coming from `npm pack` of clients/js; examples/fastapi_backend serves each and
mints its tokens. Each test signs in as a user of its own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from browsers import launch_chromium
from frontends import (
    MODULES,
    ROOT,
    VUE_DEFINES,
    Backend,
    ensure_node_modules,
    front_end,
    pack_client,
)
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

import clarion
from harness.server import Server

# Counts the page's WebSockets, to see one connection per app and its close on unmount.
COUNT_SOCKETS = """
window.__sockets = [];
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) { super(...args); window.__sockets.push(this); }
};
"""
WIDGET_BADGE = "clarion-inbox [data-testid=clarion-badge]"
# Each signs in and drives an app in Chromium (about 15 s here): `make test-slow`.
SLOW = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("frameworks")).start()
    yield srv
    srv.kill(signal.SIGTERM)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ensure_node_modules()
    return pack_client(tmp_path_factory.mktemp("pack"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from launch_chromium()


def _backend(
    tmp: pytest.TempPathFactory, server: Server, example: str, *extra: str
) -> Iterator[Backend]:
    workdir = tmp.mktemp(example)
    site = front_end(example, workdir, *extra)
    backend = Backend(workdir, server.url, server.secret, server.api_key).start(site)
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def react_app(
    tmp_path_factory: pytest.TempPathFactory, server: Server, package: Path
) -> Iterator[Backend]:
    yield from _backend(tmp_path_factory, server, "react", "--jsx=automatic")


@pytest.fixture(scope="module")
def vue_app(
    tmp_path_factory: pytest.TempPathFactory, server: Server, package: Path
) -> Iterator[Backend]:
    yield from _backend(tmp_path_factory, server, "vue", *VUE_DEFINES)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.add_init_script(COUNT_SOCKETS)
    yield ctx
    ctx.close()


def sign_in(context: BrowserContext, app: Backend) -> tuple[Page, str]:
    """A tab signed in to the example as a new user, its app live."""
    user = f"user-{uuid.uuid4().hex[:10]}"
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(app.url + "/login")
    page.fill("input[name=user]", user)
    page.click("button[type=submit]")
    try:
        expect(page.get_by_test_id("app-status")).to_have_attribute(
            "data-state", "live", timeout=15_000
        )
    except AssertionError as failed:
        raise AssertionError(f"not live; page errors: {errors}") from failed
    expect(page.get_by_test_id("app-empty")).to_be_visible()  # a new user: loaded, empty
    assert errors == []
    return page, user


def unread_on_server(server: Server, user: str) -> int:
    answer = httpx.get(server.url + "/v1/me/unread-count", headers=server.me(user), timeout=10)
    count: int = answer.json()["unread"]
    return count


def live_read_and_count(page: Page, server: Server, user: str) -> None:
    """Receive live; mark read in the list: the badge component and the widget drop at once."""
    first = server.publish(users=[user], title="First", body="one").json()["id"]
    second = server.publish(users=[user], title="Second", body="two").json()["id"]
    items = page.get_by_test_id("app-item")
    expect(items).to_have_count(2)
    expect(items.first).to_have_attribute("data-id", second)
    expect(page.get_by_test_id("app-unread")).to_have_text("2 unread")
    expect(page.locator(WIDGET_BADGE)).to_have_attribute("data-count", "2")
    expect(page.get_by_test_id("app-last")).to_have_text("Latest: Second")

    page.locator(f'[data-testid=app-item][data-id="{first}"] [data-testid=app-read]').click()
    expect(page.get_by_test_id("app-unread")).to_have_text("1 unread")
    expect(page.locator(WIDGET_BADGE)).to_have_attribute("data-count", "1")
    expect(page.locator(f'[data-testid=app-item][data-id="{first}"]')).to_have_attribute(
        "data-read", "true"
    )

    # The widget acts on the same inbox: archiving there takes the item out of the app's list.
    page.locator("clarion-inbox [data-testid=clarion-bell]").click()
    card = page.locator(f'clarion-inbox [data-testid=clarion-card][data-id="{second}"]')
    card.locator("[data-testid=clarion-dismiss]").click()
    expect(items).to_have_count(1)
    expect(page.get_by_test_id("app-unread")).to_have_text("0 unread")
    assert unread_on_server(server, user) == 0


def open_sockets(page: Page) -> list[int]:
    states: list[int] = page.evaluate("window.__sockets.map((s) => s.readyState)")
    return states


# ---- React ----


@SLOW
def test_react_receives_live_and_components_agree(
    context: BrowserContext, react_app: Backend, server: Server
) -> None:
    page, user = sign_in(context, react_app)
    live_read_and_count(page, server, user)


@SLOW
def test_react_strict_mode_opens_one_connection_and_unmount_closes_it(
    context: BrowserContext, react_app: Backend
) -> None:
    page, _ = sign_in(context, react_app)  # the example renders in <StrictMode>
    assert open_sockets(page) == [1], "StrictMode's double mount must not open a second socket"
    page.get_by_test_id("app-live").uncheck()
    expect(page.get_by_test_id("app-status")).to_have_count(0)
    page.wait_for_function("window.__sockets.every((s) => s.readyState === WebSocket.CLOSED)")
    page.get_by_test_id("app-live").check()
    expect(page.get_by_test_id("app-status")).to_have_attribute("data-state", "live")
    assert open_sockets(page) == [3, 1]


@SLOW
def test_react_optimistic_read_rolls_back_when_refused(
    context: BrowserContext, react_app: Backend, server: Server
) -> None:
    page, user = sign_in(context, react_app)
    nid = server.publish(users=[user], title="Refused").json()["id"]
    item = page.locator(f'[data-testid=app-item][data-id="{nid}"]')
    expect(item).to_have_attribute("data-read", "false")

    def refuse(route: Route) -> None:
        error = {"error": {"code": "unavailable", "message": "store down", "field": None}}
        route.fulfill(status=503, content_type="application/json", body=json.dumps(error))

    page.route("**/v1/me/notifications/*/read", refuse)
    item.get_by_test_id("app-read").click()
    expect(item).to_have_attribute("data-read", "false")
    expect(page.get_by_test_id("app-unread")).to_have_text("1 unread")
    assert unread_on_server(server, user) == 1


# ---- Vue ----


@SLOW
def test_vue_receives_live_and_components_agree(
    context: BrowserContext, vue_app: Backend, server: Server
) -> None:
    page, user = sign_in(context, vue_app)
    assert open_sockets(page) == [1]
    live_read_and_count(page, server, user)


@SLOW
def test_vue_unmount_closes_the_connection(context: BrowserContext, vue_app: Backend) -> None:
    page, _ = sign_in(context, vue_app)
    page.evaluate("globalThis.clarionExampleApp.unmount()")
    page.wait_for_function("window.__sockets.every((s) => s.readyState === WebSocket.CLOSED)")


# ---- the package ----


def test_npm_pack_ships_every_export_at_the_server_version(package: Path) -> None:
    manifest = json.loads((ROOT / "clients" / "js" / "package.json").read_text())
    assert manifest["version"] == clarion.__version__
    with tarfile.open(package) as archive:
        names = {name.removeprefix("package/") for name in archive.getnames()}
    targets = set()
    for entry in manifest["exports"].values():
        targets.update(entry.values() if isinstance(entry, dict) else [entry])
    assert {t.removeprefix("./") for t in targets} <= names
    # The same files are what the server serves under /static/.
    static = ROOT / "src" / "clarion" / "static"
    for name in ("clarion.js", "clarion-react.js", "clarion-vue.js", "clarion-inbox.js"):
        assert (MODULES / "@clarion" / "client" / name).read_bytes() == (static / name).read_bytes()


# ---- Express ----


def test_express_snippet_mints_a_token_the_server_accepts(package: Path, server: Server) -> None:
    """docs/client.md's Express route, its `jose` lines run as written."""
    docs = (ROOT / "docs" / "client.md").read_text()
    found = re.search(r"const token = await new SignJWT.*?\.sign\(secret\);", docs, re.S)
    assert found, "the Express snippet is gone from docs/client.md"
    script = (
        "import { SignJWT } from 'jose';\n"
        "const secret = new TextEncoder().encode(process.env.CLARION_JWT_SECRET);\n"
        "const req = { user: { id: 42, roles: ['admin'] } };\n"
        f"{found.group(0)}\nconsole.log(token);\n"
    )
    run = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        cwd=MODULES.parent,
        env={**os.environ, "CLARION_JWT_SECRET": server.secret},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    token = run.stdout.strip()
    answer = httpx.get(
        server.url + "/v1/me/unread-count",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    claims = jwt.decode(token, server.secret, algorithms=["HS256"])
    assert (claims["sub"], claims["roles"]) == ("42", ["admin"])


# ---- types ----


@pytest.mark.parametrize("config", ["tsconfig.json", "tsconfig.checkjs.json"])
def test_types_compile(config: str) -> None:
    """tests/js/types/usage.tsx, an app's usage, against the .d.ts files; and the sources'
    JSDoc against them (`checkJs`)."""
    modules = ensure_node_modules()
    project = ROOT / "tests" / "js" / "types" / config
    run = subprocess.run(
        [str(modules / ".bin" / "tsc"), "-p", str(project)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


# ---- the FastAPI backend on its own ----


def test_fastapi_backend_logs_in_mints_and_notifies(server: Server, tmp_path: Path) -> None:
    backend = Backend(tmp_path, server.url, server.secret, server.api_key).start()
    try:
        with httpx.Client(base_url=backend.url, timeout=10) as http:
            assert http.get("/clarion-token").status_code == 401
            assert http.get("/").status_code == 303  # to the login page
            assert http.post("/login", data={"user": "a|b"}).status_code == 422
            assert http.post("/login", data={"user": "grace"}).status_code == 303
            assert "<clarion-inbox" in http.get("/").text
            token = http.get("/clarion-token").json()["token"]
            assert http.post("/api/notify-me").status_code == 200
            http.post("/logout")
            assert http.get("/clarion-token").status_code == 401
    finally:
        backend.stop()
    inbox = httpx.get(
        server.url + "/v1/me/notifications",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert inbox.status_code == 200, inbox.text
    assert [n["title"] for n in inbox.json()["items"]] == ["Hello grace"]
