"""`/docs` and `/redoc` render in Chromium with every request outside the server refused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from browsers import launch_chromium
from playwright.sync_api import Browser, Route, expect

from harness.server import Server


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    yield from launch_chromium()


@pytest.mark.parametrize(("page", "title"), [("/docs", ".swagger-ui .title"), ("/redoc", "h1")])
def test_api_docs_render_offline(chromium: Browser, server: Server, page: str, title: str) -> None:
    tab = chromium.new_page()
    outside: list[str] = []

    def offline(route: Route) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            # ReDoc's own "API docs by Redocly" badge is an image from its site: a decoration
            # that may fail. Everything the page runs on must be local.
            if route.request.resource_type != "image":
                outside.append(route.request.url)
            route.abort()

    tab.route("**/*", offline)
    try:
        tab.goto(server.url + page)
        expect(tab.locator(title).first).to_contain_text("Clarion", timeout=20_000)
        assert outside == []
    finally:
        tab.close()
