"""Time-ordered ids (UUIDv7 layout, Crockford base32): sortable, so inbox pages key on them."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_lock = threading.Lock()
_last = 0


def new_id() -> str:
    """26 characters: 48-bit milliseconds, then 80 random bits; strictly increasing per process."""
    global _last
    with _lock:
        value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
        if value <= _last:
            value = _last + 1
        _last = value
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def id_at(when_ms: int) -> str:
    """An id whose time part is `when_ms` (a scheduled notification's due time, so the inbox,
    which orders by id, lists it where it appeared rather than where it was accepted)."""
    value = (when_ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))
