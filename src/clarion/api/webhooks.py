"""Outbound webhooks (admin key): endpoints, and their recent delivery attempts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from clarion.api.deps import admin, get_node
from clarion.api.responses import errors
from clarion.domain import ApiKey, ClarionError, NotFound, utcnow
from clarion.models import AttemptOut, AttemptsOut, WebhookIn, WebhookName, WebhookOut
from clarion.node import Node
from clarion.store.webhooks import Endpoint
from clarion.webhooks import new_secret, url_error

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
Name = Annotated[WebhookName, Path()]


def _out(e: Endpoint, pending: int, secret: str | None = None) -> WebhookOut:
    return WebhookOut(
        name=e.name,
        url=e.url,
        events=e.events,
        types=e.types,
        created_at=e.created_at,
        failing_since=e.failing_since,
        disabled_at=e.disabled_at,
        pending=pending,
        secret=secret,
    )


@router.put("/{name}", response_model=WebhookOut, responses=errors(404))
async def put_webhook(
    name: Name, body: WebhookIn, key: ApiKey = Depends(admin), node: Node = Depends(get_node)
) -> WebhookOut:
    """Create or replace an endpoint. Creating answers its signing `secret` (`whsec_...`)
    once; replacing keeps the secret and enables a disabled endpoint again."""
    if why := url_error(body.url, node.settings.webhook_allow_loopback):
        raise ClarionError(422, "invalid", why, "url")
    endpoint, created = await node.store.webhooks.put(
        name, body.url, list(dict.fromkeys(body.events)), body.types, new_secret(), utcnow()
    )
    await node.control.webhooks.changed(node.broker)
    pending = await node.store.webhooks.pending(name)
    return _out(endpoint, pending, endpoint.secret if created else None)


@router.get("/{name}", response_model=WebhookOut, responses=errors(404))
async def get_webhook(
    name: Name, key: ApiKey = Depends(admin), node: Node = Depends(get_node)
) -> WebhookOut:
    endpoint = await node.store.webhooks.get(name)
    if endpoint is None:
        raise NotFound(f"webhook {name} not found")
    return _out(endpoint, await node.store.webhooks.pending(name))


@router.delete("/{name}", status_code=204, responses=errors(404))
async def delete_webhook(
    name: Name, key: ApiKey = Depends(admin), node: Node = Depends(get_node)
) -> None:
    """Remove an endpoint and the messages still waiting for it."""
    if not await node.store.webhooks.delete(name):
        raise NotFound(f"webhook {name} not found")
    await node.control.webhooks.changed(node.broker)


@router.get("/{name}/attempts", response_model=AttemptsOut, responses=errors(404))
async def attempts(
    name: Name,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    key: ApiKey = Depends(admin),
    node: Node = Depends(get_node),
) -> AttemptsOut:
    """The newest delivery attempts first: status (or none, for a network error) and error."""
    if await node.store.webhooks.get(name) is None:
        raise NotFound(f"webhook {name} not found")
    found = await node.store.webhooks.attempts(name, limit)
    return AttemptsOut(attempts=[AttemptOut(**a) for a in found])
