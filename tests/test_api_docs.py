"""The API reference is served by Clarion itself: no CDN, so `/docs` works without internet."""

from __future__ import annotations

import re

import httpx
import pytest

from harness.server import Server


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_local_assets(server: Server, page: str) -> None:
    html = httpx.get(server.url + page).text
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html)
    assert urls, html
    for url in urls:
        assert not url.startswith(("http:", "https:", "//")), f"{page} loads {url} from outside"
        asset = httpx.get(server.url + url)
        assert asset.status_code == 200, url
    assert "/openapi.json" in urls
    assert "Clarion" in httpx.get(server.url + "/openapi.json").json()["info"]["title"]
