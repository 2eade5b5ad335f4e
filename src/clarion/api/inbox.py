"""The inbox of the user in the bearer JWT. Every change is logged on the user's stream, so
the user's other tabs and devices see it live (`state` events)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query

from clarion.api.deps import get_node, user
from clarion.api.responses import errors
from clarion.auth import Principal
from clarion.domain import BadRequest, Change
from clarion.inbox import MAX_PAGE_CURSOR, PagePosition
from clarion.models import PageOut, SeenIn, StateOut, UnreadOut
from clarion.node import Node

router = APIRouter(prefix="/v1/me", tags=["inbox"])
NotificationId = Annotated[str, Path(min_length=1, max_length=26, pattern=r"^[0-9A-Z]+$")]


@router.get("/notifications", response_model=PageOut)
async def list_notifications(
    filter: Literal["all", "unread", "archived"] = "all",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str | None, Query(max_length=MAX_PAGE_CURSOR, pattern=r"^[A-Za-z0-9_-]+$")
    ] = None,
    me: Principal = Depends(user),
    node: Node = Depends(get_node),
) -> PageOut:
    """Newest first. `filter=all` hides archived ones. Pass `next_cursor` (opaque) to get the
    next page; `unread` is counted in the same transaction as the page."""
    try:
        position = PagePosition.decode(cursor)
    except ValueError as exc:
        raise BadRequest(str(exc), field="cursor") from None
    page = await node.store.list_inbox(me.user, filter, limit, position)
    return PageOut(
        items=page.items, next_cursor=page.next_cursor, unread=page.unread, unseen=page.unseen
    )


@router.get("/unread-count", response_model=UnreadOut)
async def unread_count(me: Principal = Depends(user), node: Node = Depends(get_node)) -> UnreadOut:
    """`unread`, and `unseen`: not yet shown in an open inbox (the badge counts either)."""
    unread, unseen = await node.store.counts(me.user)
    return UnreadOut(unread=unread, unseen=unseen)


async def _change(node: Node, me: Principal, change: Change, id: str | None) -> StateOut:
    result = await node.change(me.user, change, id)
    return StateOut(id=id, change=change, unread=result.unread, unseen=result.unseen)


@router.post("/notifications/seen", response_model=StateOut, responses=errors(404))
async def mark_seen(
    body: SeenIn, me: Principal = Depends(user), node: Node = Depends(get_node)
) -> StateOut:
    """What an open inbox showed: `seen_at` is set (once), the user's other tabs get a `state`
    event `seen`, and pending escalations `unless: seen` of these notifications will not fire."""
    result = await node.seen_ids(me.user, body.ids)
    return StateOut(change="seen", unread=result.unread, unseen=result.unseen)


@router.post("/notifications/seen-all", response_model=StateOut)
async def seen_all(me: Principal = Depends(user), node: Node = Depends(get_node)) -> StateOut:
    """Everything in the inbox now counts as seen (one watermark per stream)."""
    return await _change(node, me, "seen_all", None)


@router.post("/notifications/{id}/read", response_model=StateOut, responses=errors(404))
async def mark_read(
    id: NotificationId, me: Principal = Depends(user), node: Node = Depends(get_node)
) -> StateOut:
    return await _change(node, me, "read", id)


@router.post("/notifications/{id}/unread", response_model=StateOut, responses=errors(404))
async def mark_unread(
    id: NotificationId, me: Principal = Depends(user), node: Node = Depends(get_node)
) -> StateOut:
    return await _change(node, me, "unread", id)


@router.post("/notifications/{id}/archive", response_model=StateOut, responses=errors(404))
async def archive(
    id: NotificationId, me: Principal = Depends(user), node: Node = Depends(get_node)
) -> StateOut:
    """Dismiss: the notification leaves the inbox (see `filter=archived`)."""
    return await _change(node, me, "archived", id)


@router.post("/notifications/read-all", response_model=StateOut)
async def read_all(me: Principal = Depends(user), node: Node = Depends(get_node)) -> StateOut:
    return await _change(node, me, "read_all", None)


@router.post("/notifications/archive-all", response_model=StateOut)
async def archive_all(me: Principal = Depends(user), node: Node = Depends(get_node)) -> StateOut:
    """Clear all."""
    return await _change(node, me, "archive_all", None)
