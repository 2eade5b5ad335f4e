"""What SSE and long-polling share: who the user is (header or ticket) and where to start."""

from __future__ import annotations

import time

from fastapi import Request

from clarion.auth import Principal, TokenExpired, bearer, origin_allowed
from clarion.domain import BadRequest, Forbidden, Unauthorized
from clarion.node import Node
from clarion.streams import decode_cursor


async def principal_of(request: Request, node: Node, ticket: str | None) -> Principal:
    """A ticket (EventSource cannot send headers) or the Authorization header."""
    if not origin_allowed(
        request.headers.get("origin"), request.headers.get("host"), node.settings.allowed_origins
    ):
        raise Forbidden("origin not allowed")
    if ticket:
        claims = await node.store.consume_ticket(ticket)
        if claims is None:
            raise Unauthorized("ticket unknown, used or expired")
        principal = Principal.of(claims)
        if principal.expires_at <= time.time():  # minted just before its token expired
            raise TokenExpired()
    else:
        principal = await node.tokens.verify_async(bearer(request.headers.get("authorization")))
    await node.limits.check("user", principal.user)
    await node.seen(principal)
    return principal


def position_of(cursor: str | None) -> dict[str, int]:
    try:
        return decode_cursor(cursor)
    except ValueError as exc:
        raise BadRequest(str(exc), field="since") from None
