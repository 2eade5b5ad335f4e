"""One-click unsubscribe (RFC 8058) from the links in Clarion's emails: signed, no login.

`POST` (what mail clients send for `List-Unsubscribe-Post: List-Unsubscribe=One-Click`)
turns the email channel off for that type and user; `GET` (a person following the link)
answers a page with a button that posts, so link scanners that prefetch URLs unsubscribe no
one.
"""

from __future__ import annotations

from html import escape
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from starlette.responses import HTMLResponse

from clarion.api.deps import get_node
from clarion.api.responses import errors
from clarion.domain import Forbidden
from clarion.email import verify
from clarion.node import Node
from clarion.responses import JSON

router = APIRouter(prefix="/v1", tags=["users"])
User = Annotated[
    str, Query(alias="u", min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
]
Type = Annotated[str, Query(alias="t", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Signature = Annotated[
    str, Query(alias="s", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_=-]+$")
]
# The answer is a page; errors stay the API's JSON errors.
PAGE: dict[int | str, dict[str, Any]] = {
    200: {"description": "a small HTML page", "content": {"text/html": {}}},
    **errors(403),
}


def _checked(node: Node, user: str, type: str, signature: str) -> None:
    if not verify(node.mailer.key, user, type, signature):
        raise Forbidden("this unsubscribe link is not valid")


@router.get("/unsubscribe", response_class=JSON, responses=PAGE)
async def unsubscribe_page(
    u: User, t: Type, s: Signature, node: Node = Depends(get_node)
) -> HTMLResponse:
    _checked(node, u, t, s)
    return HTMLResponse(
        "<!doctype html><meta charset=utf-8><title>Unsubscribe</title>"
        f"<p>Stop emails about <b>{escape(t)}</b>?</p><form method=post>"
        "<button>Unsubscribe</button></form>"
    )


@router.post("/unsubscribe", response_class=JSON, responses=PAGE)
async def unsubscribe(
    u: User, t: Type, s: Signature, node: Node = Depends(get_node)
) -> HTMLResponse:
    """Email off for this type and user (the user can turn it on again in its preferences)."""
    _checked(node, u, t, s)
    await node.set_preferences(u, {}, None, email={t: False})
    return HTMLResponse("<!doctype html><meta charset=utf-8><p>You are unsubscribed.</p>")
