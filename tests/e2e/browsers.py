"""Browser helpers for the first-hour tests: Chromium, and a web app on a second origin.

A module, not a conftest: the tests/ conftest is imported by the name `conftest` too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

Handler = Callable[[], tuple[str, bytes]]  # -> (content type, body)


def launch_chromium() -> Iterator[Browser]:
    """Debian's Chromium through Playwright, for a module's `chromium` fixture to yield from."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: browser tests must run in CI")
        pytest.skip("chromium not installed: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Site:
    """A real HTTP server on 127.0.0.1 and a port of its own: the developer's web app, on
    another origin than Clarion. `routes` maps a path to what it answers (read per request)."""

    def __init__(self, routes: dict[str, Handler]) -> None:
        self.routes = routes
        site = self

        class Answer(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                handler = site.routes.get(self.path.split("?")[0])
                if handler is None:
                    self.send_error(404)
                    return
                kind, body = handler()
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
