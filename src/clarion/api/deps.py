"""FastAPI dependencies: the node, and who is calling (publisher key or user token)."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from clarion.api import console_session
from clarion.auth import Principal
from clarion.domain import ApiKey, Unauthorized
from clarion.node import Node

api_key_scheme = HTTPBearer(
    auto_error=False, scheme_name="ApiKey", description="publisher API key (clk_...)"
)
user_scheme = HTTPBearer(auto_error=False, scheme_name="UserJWT", description="user JWT")


async def get_node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def _header(creds: HTTPAuthorizationCredentials | None) -> str:
    if creds is None:
        raise Unauthorized("missing Authorization: Bearer header")
    return f"Bearer {creds.credentials}"


async def publisher(
    request: Request,
    creds: HTTPAuthorizationCredentials | None = Depends(api_key_scheme),
    node: Node = Depends(get_node),
) -> ApiKey:
    if creds is None and (session := await console_session.session_key(request, node)):
        return session  # the signed-in console (an admin key's session, CSRF-checked)
    key = await node.keys.check(_header(creds), "publish")
    request.state.who = f"key:{key.id}"  # for the access log (access.AccessLog)
    await node.limits.check("key", key.id)
    return key


async def admin(
    request: Request,
    creds: HTTPAuthorizationCredentials | None = Depends(api_key_scheme),
    node: Node = Depends(get_node),
) -> ApiKey:
    if creds is None and (session := await console_session.session_key(request, node)):
        return session
    key = await node.keys.check(_header(creds), "admin")
    request.state.who = f"key:{key.id}"
    return key


async def user(
    request: Request,
    creds: HTTPAuthorizationCredentials | None = Depends(user_scheme),
    node: Node = Depends(get_node),
) -> Principal:
    if creds is None:
        raise Unauthorized("missing Authorization: Bearer header")
    principal = await node.tokens.verify_async(creds.credentials)
    request.state.who = f"user:{principal.user}"
    await node.limits.check("user", principal.user)
    await node.seen(principal)
    return principal


async def client_ip(request: Request, node: Node = Depends(get_node)) -> None:
    """Per-address limit for every API route."""
    await address_limit(node, request.client.host if request.client else "-", request.headers)


async def address_limit(node: Node, address: str, headers: Mapping[str, str]) -> None:
    """The per-address limit is meant for anonymous traffic. A backend publishes from one
    address at its key's own rate: past the address limit, a request whose publisher key
    verified moments ago (a cache hit, no query) passes, and its key's limit applies. An
    unknown key over the address limit is refused without being looked up."""
    over = not await node.limits.allow("ip", address)
    if over and node.keys.known(headers.get("authorization")) is None:
        raise await node.limits.refusal("ip", address)
