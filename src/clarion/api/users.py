"""User profiles (publisher key): what channels beyond the open tab need to reach a user, and
the right to erasure."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from clarion.api.deps import get_node, publisher
from clarion.api.responses import errors
from clarion.domain import ApiKey, NotFound, Profile
from clarion.models import ErasedOut, ProfileIn, ProfileOut, UserId
from clarion.node import Node, profile_of

router = APIRouter(prefix="/v1", tags=["users"])


def _out(p: Profile) -> ProfileOut:
    return ProfileOut(
        id=p.id,
        email=p.email,
        name=p.name,
        locale=p.locale,
        timezone=p.timezone,
        data=p.data,
        email_status=p.email_status,
        updated_at=p.updated_at,
    )


@router.put("/users/{id}", response_model=ProfileOut)
async def put_user(
    id: UserId, body: ProfileIn, _: ApiKey = Depends(publisher), node: Node = Depends(get_node)
) -> ProfileOut:
    """Create or replace a user's profile: `email` (where the email channel sends), `name`,
    `locale` (BCP 47: picks the templates' variant), `timezone`, free `data` for templates.
    A new address is no longer known to be bad."""
    await node.store.put_profiles([profile_of(id, body)])
    found = await node.store.profile(id)
    assert found is not None
    return _out(found)


@router.get("/users/{id}", response_model=ProfileOut, responses=errors(404))
async def get_user(
    id: UserId, _: ApiKey = Depends(publisher), node: Node = Depends(get_node)
) -> ProfileOut:
    found = await node.store.profile(id)
    if found is None:
        raise NotFound(f"user {id!r} has no profile")
    return _out(found)


@router.delete("/users/{id}", response_model=ErasedOut)
async def delete_user(
    id: UserId, _: ApiKey = Depends(publisher), node: Node = Depends(get_node)
) -> ErasedOut:
    """Forget the user entirely (right to erasure): profile, preferences, inbox state,
    follows, personal notifications with their events, push subscriptions, pending pushes,
    emails and escalations. Its live connections are closed. Answers the rows removed per
    table; erasing an unknown user answers an empty `erased`."""
    return ErasedOut(id=id, erased=await node.forget(id))
