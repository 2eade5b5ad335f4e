"""Web Push subscriptions: a browser registers what `PushManager.subscribe()` gave it, and
finds the server's VAPID public key (the `applicationServerKey`) to subscribe with."""

from __future__ import annotations

import base64
import re
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from clarion.api.deps import get_node, user
from clarion.auth import Principal
from clarion.domain import ClarionError
from clarion.egress import canonical_host_error
from clarion.models import Line
from clarion.node import Node

router = APIRouter(prefix="/v1", tags=["push"])
B64URL = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")


class PushKeys(BaseModel):
    p256dh: str = Field(max_length=128, description="the browser's P-256 public key, base64url")
    auth: str = Field(max_length=64, description="the 16-byte auth secret, base64url")


class PushSubscriptionIn(BaseModel):
    """`PushSubscription.toJSON()` as the browser gives it."""

    model_config = ConfigDict(extra="ignore")
    endpoint: Line = Field(max_length=2048)
    keys: PushKeys
    expirationTime: int | None = None  # the browser's own name


class EndpointIn(BaseModel):
    endpoint: Line = Field(max_length=2048)


class PushSubscriptionOut(BaseModel):
    id: str
    endpoint: str


class VapidKeyOut(BaseModel):
    public_key: str = Field(description="the applicationServerKey for pushManager.subscribe()")


def _invalid(field: str, message: str) -> ClarionError:
    return ClarionError(422, "invalid", message, field)


def check_endpoint(url: str, allow_http_loopback: bool) -> None:
    """A push service is a public https origin. Anything else (another scheme, a private or
    loopback address in any spelling, an internal name) would let a user make Clarion post to
    the inside of its own network; the sender checks the resolved address again (egress.py)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        parts.port  # noqa: B018 -- raises on a port that is not a number in range
    except ValueError:
        raise _invalid("endpoint", "the endpoint's port is not valid") from None
    if allow_http_loopback and parts.scheme == "http" and host == "127.0.0.1":
        return
    if parts.scheme != "https" or not host:
        raise _invalid("endpoint", "the endpoint must be an https URL")
    if parts.username or parts.password:
        raise _invalid("endpoint", "the endpoint must not carry credentials")
    if error := canonical_host_error(host):
        raise _invalid("endpoint", error)


def _decode(value: str, field: str) -> bytes:
    if not B64URL.match(value):
        raise _invalid(field, f"{field} must be base64url")
    return base64.urlsafe_b64decode(value.rstrip("=") + "=" * (-len(value.rstrip("=")) % 4))


def check_keys(p256dh: str, auth: str) -> None:
    point = _decode(p256dh, "keys.p256dh")
    try:
        if len(point) != 65:
            raise ValueError("not an uncompressed point")
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise _invalid("keys.p256dh", "keys.p256dh must be a P-256 public key") from None
    if len(_decode(auth, "keys.auth")) != 16:
        raise _invalid("keys.auth", "keys.auth must be 16 bytes")


@router.post("/me/push-subscriptions", status_code=201, response_model=PushSubscriptionOut)
async def subscribe(
    body: PushSubscriptionIn, me: Principal = Depends(user), node: Node = Depends(get_node)
) -> PushSubscriptionOut:
    """Register this browser for Web Push (the body is `PushSubscription.toJSON()`). Its user
    then gets high and critical notifications addressed to it by name, per its preferences
    (docs/audiences.md). Registering an endpoint again refreshes it."""
    check_endpoint(body.endpoint, node.settings.push_allow_http_loopback)
    check_keys(body.keys.p256dh, body.keys.auth)
    sid = await node.store.push.subscribe(
        me.user, body.endpoint, body.keys.p256dh.rstrip("="), body.keys.auth.rstrip("=")
    )
    return PushSubscriptionOut(id=sid, endpoint=body.endpoint)


@router.delete("/me/push-subscriptions", status_code=204, response_class=Response)
async def unsubscribe(
    body: EndpointIn, me: Principal = Depends(user), node: Node = Depends(get_node)
) -> Response:
    """Forget this browser's subscription and its pending pushes (204 also when unknown)."""
    await node.store.push.unsubscribe(me.user, body.endpoint)
    return Response(status_code=204)


@router.get("/push/vapid-public-key", response_model=VapidKeyOut)
async def vapid_public_key(node: Node = Depends(get_node)) -> VapidKeyOut:
    """The server's VAPID public key (base64url), the same on every node."""
    return VapidKeyOut(public_key=node.pusher.public_key)
