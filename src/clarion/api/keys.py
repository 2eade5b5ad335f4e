"""Publisher API keys over HTTP, for an admin key (the CLI does the same on the database)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from clarion.access import audit
from clarion.api.deps import admin, get_node
from clarion.api.responses import errors
from clarion.domain import ApiKey, ClarionError, NotFound
from clarion.models import Instant, KeyOut, Line
from clarion.node import Node

router = APIRouter(prefix="/v1/keys", tags=["keys"])


class KeyIn(BaseModel):
    name: Line = Field(min_length=1, max_length=200)
    scope: Literal["publish", "admin"] = "publish"
    expires_at: Instant | None = None


class KeyCreated(KeyOut):
    secret: str = Field(description="shown once; only its hash is stored")


def _out(key: ApiKey) -> KeyOut:
    """Times in UTC with their zone (SQLite hands them back naive)."""
    values = {f: getattr(key, f) for f in KeyOut.model_fields}
    for name, value in values.items():
        if isinstance(value, datetime) and value.tzinfo is None:
            values[name] = value.replace(tzinfo=UTC)
    return KeyOut(**values)


@router.post("", status_code=201, response_model=KeyCreated)
async def create_key(
    body: KeyIn, me: ApiKey = Depends(admin), node: Node = Depends(get_node)
) -> KeyCreated:
    """Create a key. Rotate by creating a new one, deploying it, then revoking the old one."""
    key, secret = await node.store.create_key(body.name, body.scope, body.expires_at)
    out = _out(key)
    audit(me, "key.create", f"key:{key.id}", None, out.model_dump(mode="json"))
    return KeyCreated(**out.model_dump(), secret=secret)


@router.get("", response_model=list[KeyOut])
async def list_keys(_: ApiKey = Depends(admin), node: Node = Depends(get_node)) -> list[KeyOut]:
    return [_out(k) for k in await node.store.list_keys()]


@router.delete("/{key_id}", status_code=204, responses=errors(404, 409))
async def revoke_key(
    key_id: Annotated[str, Path(max_length=64, pattern=r"^[0-9a-f]+$")],
    me: ApiKey = Depends(admin),
    node: Node = Depends(get_node),
) -> None:
    """Revoke a key. The last active admin key stays: create another first (the CLI, which
    works on the database, can always revoke)."""
    active = [k for k in await node.store.list_keys() if k.revoked_at is None]
    admins = [k.id for k in active if k.scope == "admin"]
    if admins == [key_id]:
        raise ClarionError(409, "last_admin_key", "the last admin key cannot be revoked", "key_id")
    before = next((k for k in active if k.id == key_id), None)
    if not await node.store.revoke_key(key_id):
        raise NotFound(f"no active key {key_id}")
    node.keys.forget()
    was = _out(before).model_dump(mode="json") if before else None
    audit(me, "key.revoke", f"key:{key_id}", was, {**(was or {}), "revoked": True})
