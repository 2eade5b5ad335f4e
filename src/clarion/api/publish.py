"""`POST /v1/notifications` (and `/batch`): acknowledged only once the notification is committed."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import ValidationError

from clarion.api.deps import get_node, publisher
from clarion.api.responses import errors
from clarion.domain import ApiKey, ClarionError, Published
from clarion.errors import field_of
from clarion.models import BatchIn, BatchItemOut, BatchOut, PublishIn, PublishOut
from clarion.node import Node
from clarion.responses import JSON

router = APIRouter(prefix="/v1", tags=["publish"])


def _out(result: Published) -> PublishOut:
    return PublishOut(
        id=result.id,
        recipients=result.recipients,
        streams=result.streams,
        duplicate=result.duplicate,
        held=result.held,
        skipped=result.skipped,
        scheduled_for=result.scheduled_for,
    )


@router.post(
    "/notifications",
    status_code=201,
    response_model=PublishOut,
    responses={
        200: {"description": "idempotency key replayed: the first publish's result"},
        **errors(409),
    },
)
async def publish(
    body: PublishIn, key: ApiKey = Depends(publisher), node: Node = Depends(get_node)
) -> JSON:
    """Store a notification for its audience (`users`, `topics`, `roles`, `all`, in any mix)
    and deliver it live. A user in several of the audiences gets it once.

    Answers only after the commit, so a 201 is never lost. A replayed `idempotency_key`
    creates nothing and answers the first result with `duplicate: true` (status 200).
    """
    result = await node.publish(body, publisher=key.id)
    return JSON(_out(result).model_dump(), status_code=200 if result.duplicate else 201)


@router.post("/notifications/batch", response_model=BatchOut)
async def publish_batch(
    body: BatchIn, key: ApiKey = Depends(publisher), node: Node = Depends(get_node)
) -> JSON:
    """Up to 500 notifications, each with its own audience, answered item by item (`status`
    201, 200 for a replayed idempotency key, 422 with the field for an invalid item, 503 when
    the store is down). Valid items are stored even when others are invalid; they commit
    together in as few transactions as the server batches."""
    await node.limits.check("key", key.id, cost=len(body.notifications) - 1)
    items: list[PublishIn | ClarionError] = []
    for i, raw in enumerate(body.notifications):
        try:
            items.append(PublishIn.model_validate(raw))
        except ValidationError as exc:
            first = exc.errors()[0]
            field = field_of(("notifications", i, *first.get("loc", ())))
            items.append(ClarionError(422, "invalid", str(first.get("msg")), field))

    async def one(item: PublishIn | ClarionError) -> BatchItemOut:
        if isinstance(item, ClarionError):
            return BatchItemOut(status=item.status, error=item.body()["error"])
        try:
            result = await node.publish(item, publisher=key.id)
        except ClarionError as exc:
            return BatchItemOut(status=exc.status, error=exc.body()["error"])
        return BatchItemOut(status=200 if result.duplicate else 201, result=_out(result))

    results = await asyncio.gather(*(one(i) for i in items))
    out: dict[str, Any] = BatchOut(results=list(results)).model_dump()
    return JSON(out)
