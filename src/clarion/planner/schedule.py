"""Scheduling and cancelling, decided without I/O: when a publish is due, and what a cancel
leaves of a scheduled publish's audience."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

MAX_AHEAD = timedelta(days=366)  # how far ahead a publish may be scheduled


def due_time(send_at: datetime | None, delay: int | None, now: datetime) -> datetime | None:
    """When a publish becomes visible: `send_at`, or `now + delay`; None means now (no
    schedule, or a time already past: a late request is sent at once rather than refused)."""
    if send_at is not None:
        when = send_at
    elif delay:
        when = now + timedelta(seconds=delay)
    else:
        return None
    return when if when > now else None


def without_users(body: dict[str, Any], users: list[str]) -> tuple[dict[str, Any] | None, int]:
    """A scheduled publish's body less the cancelled `users`: (the body left, or None when no
    audience is left; how many of its named users were cancelled). `users` empty: all of it."""
    named = list(body.get("users") or [])
    shared = bool(body.get("topics") or body.get("roles") or body.get("all"))
    if not users:
        return None, 1
    gone = set(users)
    kept = [u for u in named if u not in gone]
    removed = len(named) - len(kept)
    if not kept and not shared:
        return None, removed
    return {**body, "users": kept}, removed


def backoff(attempts: int, first: float, cap: float = 3600.0) -> float:
    """Seconds before retry number `attempts` (1, 2, ...): `first` doubling, at most `cap`."""
    return float(min(cap, first * 2 ** max(0, attempts - 1)))
