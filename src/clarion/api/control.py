"""Control and visibility for publishers (docs/control.md): cancel what is pending, recall
what went out, the delivery log, a user's inbox with states, and presence."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query

from clarion.api.deps import get_node, publisher
from clarion.api.responses import errors
from clarion.domain import ApiKey, BadRequest, NotFound, utcnow
from clarion.inbox import MAX_PAGE_CURSOR, PagePosition
from clarion.models import (
    CancelIn,
    CancelOut,
    DeliveriesOut,
    PageOut,
    PresenceOut,
    RecallOut,
)
from clarion.node import Node

router = APIRouter(prefix="/v1", tags=["control"])
NotificationId = Annotated[str, Path(min_length=1, max_length=26, pattern=r"^[0-9A-Z]+$")]
UserPath = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


@router.post("/notifications/cancel", response_model=CancelOut)
async def cancel(
    body: CancelIn, key: ApiKey = Depends(publisher), node: Node = Depends(get_node)
) -> CancelOut:
    """Cancel what carries `cancellation_key` and is not released yet: scheduled
    notifications, held digest items and pending escalations (of `users` only, if given).
    What was released already stays: recall it with `DELETE /v1/notifications/{id}`."""
    return CancelOut(cancelled=await node.control.cancel(body.cancellation_key, body.users))


@router.delete("/notifications/{id}", response_model=RecallOut, responses=errors(404))
async def recall(
    id: NotificationId, key: ApiKey = Depends(publisher), node: Node = Depends(get_node)
) -> RecallOut:
    """Take a notification back: it leaves every inbox and unread count, live tabs remove it
    (a `state` event with change `removed`), a resume never replays it, and its pending
    pushes and digest items are dropped. A scheduled one is cancelled."""
    return RecallOut(id=id, streams=await node.control.recall(id))


@router.get("/notifications/{id}/deliveries", response_model=DeliveriesOut, responses=errors(404))
async def delivery_log(
    id: NotificationId,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")] = None,
    key: ApiKey = Depends(publisher),
    node: Node = Depends(get_node),
) -> Any:
    """What happened to a notification, per recipient and channel, each state with its time.
    For topics, roles and `all`: counts per state and the users who acted on it one by one.
    Paged by user: pass `next_cursor` as `cursor`."""
    found = await node.store.delivery_log(id, cursor or "", limit, utcnow())
    if found is None:
        raise NotFound(f"notification {id} not found")
    return found


@router.get("/users/{user}/notifications", response_model=PageOut)
async def user_notifications(
    user: UserPath,
    filter: Literal["all", "unread", "archived"] = "all",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str | None, Query(max_length=MAX_PAGE_CURSOR, pattern=r"^[A-Za-z0-9_-]+$")
    ] = None,
    key: ApiKey = Depends(publisher),
    node: Node = Depends(get_node),
) -> PageOut:
    """A user's inbox as the user sees it (read, archived, seen), for a backend or a support
    person; each item also lists its logged `deliveries` states for this user."""
    try:
        position = PagePosition.decode(cursor)
    except ValueError as exc:
        raise BadRequest(str(exc), field="cursor") from None
    page = await node.store.list_inbox(user, filter, limit, position)
    logged = await node.store.user_log(user, [item["id"] for item in page.items])
    items = [{**item, "deliveries": logged.get(item["id"], [])} for item in page.items]
    return PageOut(items=items, next_cursor=page.next_cursor, unread=page.unread)


@router.get("/users/{user}/presence", response_model=PresenceOut)
async def presence(
    user: UserPath, key: ApiKey = Depends(publisher), node: Node = Depends(get_node)
) -> Any:
    """Online or not across every node (from the store: each node writes its connections
    about once a second), live connections by transport, and when the user was last seen."""
    return await node.control.presence.of(user)
