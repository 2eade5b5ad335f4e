"""Preferences: each user's choices per type and channel and its quiet hours; the app's
defaults and rules per type (admin key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from clarion import preferences as rules
from clarion import templates
from clarion.access import audit
from clarion.api.deps import admin, get_node, publisher, user
from clarion.api.responses import errors
from clarion.auth import Principal
from clarion.domain import ApiKey, ClarionError, Escalation, NotFound, TypeSettings, utcnow
from clarion.models import (
    ChannelsOut,
    EscalationIn,
    PreferencesIn,
    PreferencesOut,
    QuietHours,
    Throttle,
    TypeSettingsIn,
    TypeSettingsOut,
)
from clarion.node import Node

router = APIRouter(prefix="/v1", tags=["preferences"])
MAX_TYPE_CHOICES = 200  # per user: each is a row, read on every publish to the user
TypePath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


async def _read(node: Node, user: str) -> PreferencesOut:
    prefs, settings = await node.store.preferences(user)
    types = {}
    for type in sorted(set(prefs.types) | set(prefs.email) | set(settings)):
        in_app, push, mandatory, custom = rules.channels(type, prefs, settings)
        email = rules.email_allowed(type, prefs.email.get(type), settings)
        custom = custom or type in prefs.email
        types[type] = ChannelsOut(
            in_app=in_app, push=push, email=email, mandatory=mandatory, custom=custom
        )
    quiet = None
    if prefs.quiet_start and prefs.quiet_end:
        quiet = QuietHours(start=prefs.quiet_start, end=prefs.quiet_end)
    return PreferencesOut(
        timezone=prefs.timezone,
        quiet_hours=quiet,
        quiet_now=rules.quiet_now(prefs, utcnow()),
        types=types,
    )


@router.get("/me/preferences", response_model=PreferencesOut)
async def get_preferences(
    me: Principal = Depends(user), node: Node = Depends(get_node)
) -> PreferencesOut:
    """Effective settings per type: the user's choice, else the app's default; mandatory
    types are always on."""
    return await _read(node, me.user)


@router.put("/me/preferences", response_model=PreferencesOut)
async def put_preferences(
    body: PreferencesIn, me: Principal = Depends(user), node: Node = Depends(get_node)
) -> PreferencesOut:
    """Change some types' channels (null: back to the default), the time zone or the quiet
    hours. Turning `in_app` off hides the type from the inbox and live connections at once.
    Quiet hours hold back push only: in-app notifications are still stored and shown."""
    settings = await node.store.type_settings()
    for type, ch in body.types.items():
        off = [c for c in ("in_app", "push", "email") if getattr(ch, c) is False]
        if settings.get(type, rules.DEFAULT).mandatory and off:
            field = f"types.{type}.{off[0]}"
            raise ClarionError(422, "mandatory", f"type {type!r} is mandatory", field)
    prefs, _ = await node.store.preferences(me.user)
    kept = {t for t in prefs.types if t not in body.types}
    kept |= {
        t
        for t, ch in body.types.items()
        if ch.in_app is not None or ch.push is not None or ch.email is not None
    }
    if len(kept) > MAX_TYPE_CHOICES:
        message = f"at most {MAX_TYPE_CHOICES} types with a choice of their own; reset some first"
        raise ClarionError(422, "invalid", message, "types")
    zone = None
    if body.timezone is not None or body.quiet_hours is not None or body.clear_quiet_hours:
        start, end = prefs.quiet_start, prefs.quiet_end
        if body.quiet_hours is not None:
            start, end = body.quiet_hours.start, body.quiet_hours.end
        if body.clear_quiet_hours:
            start = end = None
        zone = (body.timezone or prefs.timezone, start, end)
    types = {t: (ch.in_app, ch.push) for t, ch in body.types.items()}
    email = {t: ch.email for t, ch in body.types.items()}
    await node.set_preferences(me.user, types, zone, email)
    return await _read(node, me.user)


def _type_out(value: TypeSettings) -> TypeSettingsOut:
    throttle = None
    if value.throttle_count and value.throttle_seconds:
        throttle = Throttle(count=value.throttle_count, seconds=value.throttle_seconds)
    return TypeSettingsOut(
        type=value.type,
        in_app=value.in_app,
        push=value.push,
        mandatory=value.mandatory,
        throttle=throttle,
        digest_seconds=value.digest_seconds,
        email=value.email,
        templates={c: {k: dict(v) for k, v in ls.items()} for c, ls in value.templates.items()},
        locale=value.locale,
        escalate=[
            EscalationIn(
                channel="email",
                after=e.after,
                unless="read" if e.unless == "read" else "seen",
                when="offline" if e.offline else None,
            )
            for e in value.escalate
        ],
    )


@router.get("/types", response_model=list[TypeSettingsOut])
async def list_types(
    _: ApiKey = Depends(publisher), node: Node = Depends(get_node)
) -> list[TypeSettingsOut]:
    settings = await node.store.type_settings()
    return [_type_out(v) for _, v in sorted(settings.items())]


@router.put("/types/{type}", response_model=TypeSettingsOut)
async def put_type(
    type: TypePath,
    body: TypeSettingsIn,
    me: ApiKey = Depends(admin),
    node: Node = Depends(get_node),
) -> TypeSettingsOut:
    """The app's default channels for a type, whether users may opt out, a per-user throttle
    (excess notifications wait for a summary at the window's end) and a digest window
    (low-priority ones are collected into one summary). `critical` bypasses both.
    `templates` per channel and locale (docs/channels.md) are rendered against sample data
    here: an error is a 422 naming the template. `escalate`: the type's default escalation
    rules. Other nodes see a change within 5 seconds."""
    try:
        templates.check(body.templates)
    except templates.TemplateInvalid as exc:
        raise ClarionError(422, "invalid", str(exc), exc.field) from None
    value = TypeSettings(
        type=type,
        in_app=body.in_app,
        push=body.push,
        mandatory=body.mandatory,
        throttle_count=body.throttle.count if body.throttle else None,
        throttle_seconds=body.throttle.seconds if body.throttle else None,
        digest_seconds=body.digest_seconds,
        email=body.email,
        templates=body.templates,
        locale=body.locale,
        escalate=tuple(
            Escalation(e.channel, e.after, e.unless, e.when == "offline") for e in body.escalate
        ),
    )
    before = (await node.store.type_settings()).get(type)
    await node.store.put_type_settings(value)
    out = _type_out(value)
    was = _type_out(before).model_dump(mode="json") if before else None
    audit(me, "type.put", f"type:{type}", was, out.model_dump(mode="json"))
    return out


@router.delete("/types/{type}", status_code=204, responses=errors(404))
async def delete_type(
    type: TypePath, me: ApiKey = Depends(admin), node: Node = Depends(get_node)
) -> None:
    before = (await node.store.type_settings()).get(type)
    if not await node.store.delete_type_settings(type):
        raise NotFound(f"type {type!r} has no settings")
    was = _type_out(before).model_dump(mode="json") if before else None
    audit(me, "type.delete", f"type:{type}", was, None)
