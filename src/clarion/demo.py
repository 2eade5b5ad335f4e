"""`clarion serve --demo`: a demo page at `/` for the user `demo`, and a form to send to it.

The demo endpoints mint tokens and publish without an API key, so they exist only with
`--demo`, which is meant for a laptop, never for a public server.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends
from starlette.responses import FileResponse

from clarion.api.deps import get_node
from clarion.models import NotificationIn, PublishIn, PublishOut
from clarion.node import Node

router = APIRouter(tags=["demo"], include_in_schema=False)
PAGE = Path(__file__).with_name("static") / "demo.html"
DEMO_USER = "demo"


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(PAGE, media_type="text/html")


@router.get("/demo/token")
async def token(node: Node = Depends(get_node)) -> dict[str, object]:
    ttl = 3600
    return {
        "token": node.tokens.mint(DEMO_USER, ttl=ttl, topics=["demo:*"]),
        "user": DEMO_USER,
        "expires_in": ttl,
    }


@router.post("/demo/send", status_code=201, response_model=PublishOut)
async def send(body: NotificationIn, node: Node = Depends(get_node)) -> PublishOut:
    request = PublishIn(**body.model_dump(), users=[DEMO_USER])
    result = await node.publish(request, publisher="demo")
    return PublishOut(
        id=result.id,
        recipients=result.recipients,
        streams=result.streams,
        duplicate=False,
        held=result.held,
        skipped=result.skipped,
    )
