"""`POST /v1/notifications`: acknowledged (201) only once the notification is committed."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from clarion.api.deps import get_node, publisher
from clarion.models import PublishIn, PublishOut
from clarion.node import Node
from clarion.responses import JSON
from clarion.store.base import ApiKey

router = APIRouter(prefix="/v1", tags=["publish"])


@router.post(
    "/notifications",
    status_code=201,
    response_model=PublishOut,
    responses={200: {"description": "idempotency key replayed: the first publish's result"}},
)
async def publish(
    body: PublishIn, key: ApiKey = Depends(publisher), node: Node = Depends(get_node)
) -> JSON:
    """Store a notification for its audience and deliver it live.

    Answers only after the commit, so a 201 is never lost. A replayed `idempotency_key`
    creates nothing and answers the first result with `duplicate: true` (status 200).
    """
    result = await node.publish(body, publisher=key.id)
    out = PublishOut(
        id=result.id,
        recipients=result.recipients,
        streams=result.streams,
        duplicate=result.duplicate,
    )
    return JSON(out.model_dump(), status_code=200 if result.duplicate else 201)
