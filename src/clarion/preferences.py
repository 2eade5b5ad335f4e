"""Preference rules, without I/O: what a user gets per type and channel, and quiet hours.

The order is the one users expect: a mandatory type is always on; otherwise the user's own
choice wins; otherwise the app's default for the type; otherwise on.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from clarion.domain import TypeSettings, UserPreferences

DEFAULT = TypeSettings(type="*")


def channels(
    type: str, prefs: UserPreferences, settings: Mapping[str, TypeSettings]
) -> tuple[bool, bool, bool, bool]:
    """(in_app, push, mandatory, custom) for one type."""
    app = settings.get(type, DEFAULT)
    if app.mandatory:
        return True, True, True, False
    in_app, push = prefs.types.get(type, (None, None))
    custom = in_app is not None or push is not None
    return (
        app.in_app if in_app is None else in_app,
        app.push if push is None else push,
        False,
        custom,
    )


def in_app_allowed(type: str, choice: bool | None, settings: Mapping[str, TypeSettings]) -> bool:
    """The in-app rule alone, from the user's stored choice (None: no choice)."""
    app = settings.get(type, DEFAULT)
    if app.mandatory:
        return True
    return app.in_app if choice is None else choice


def email_allowed(type: str, choice: bool | None, settings: Mapping[str, TypeSettings]) -> bool:
    """The email rule, from the user's stored choice (None: the app's default for the type)."""
    app = settings.get(type, DEFAULT)
    if app.mandatory:
        return True
    return app.email if choice is None else choice


def muted(prefs: UserPreferences, settings: Mapping[str, TypeSettings]) -> frozenset[str]:
    """Types hidden from this user's inbox and live connections."""
    types = set(prefs.types) | {t for t, s in settings.items() if not s.in_app}
    return frozenset(
        t for t in types if not in_app_allowed(t, prefs.types.get(t, (None, None))[0], settings)
    )


def quiet_now(prefs: UserPreferences, now: datetime) -> bool:
    """Whether `now` falls in the user's quiet hours, read in the user's time zone.
    A window whose end is before its start runs past midnight (22:00-07:00)."""
    if not prefs.quiet_start or not prefs.quiet_end:
        return False
    local = now.astimezone(ZoneInfo(prefs.timezone)).time()
    start, end = time.fromisoformat(prefs.quiet_start), time.fromisoformat(prefs.quiet_end)
    if start == end:
        return False
    if start < end:
        return start <= local < end
    return local >= start or local < end


def quiet_until(prefs: UserPreferences, now: datetime) -> datetime | None:
    """When the quiet hours in force at `now` end (aware, in the user's zone), else None."""
    if not quiet_now(prefs, now):
        return None
    zone = ZoneInfo(prefs.timezone)
    local = now.astimezone(zone)
    end = datetime.combine(local.date(), time.fromisoformat(prefs.quiet_end or ""), zone)
    return (
        end if end > local else datetime.combine(local.date() + timedelta(days=1), end.time(), zone)
    )
