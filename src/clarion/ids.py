"""Time-ordered ids (UUIDv7 layout, Crockford base32): sortable, so inbox pages key on them."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every pair of characters (10 bits), so an id is 13 lookups and a join, not a loop over 26
# characters (an id per publish: a few microseconds of each request).
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_SHIFTS = tuple(range(120, -1, -10))
_BITS = (1 << 130) - 1  # 26 characters of 5 bits
_lock = threading.Lock()
_last = 0


def encode(value: int) -> str:
    """The 26 Crockford base32 characters of `value`'s low 130 bits, most significant first."""
    value &= _BITS
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


def new_id() -> str:
    """26 characters: 48-bit milliseconds, then 80 random bits; strictly increasing per process."""
    global _last
    with _lock:
        value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
        if value <= _last:
            value = _last + 1
        _last = value
    return encode(value)


def id_at(when_ms: int) -> str:
    """An id whose time part is `when_ms` (a scheduled notification's due time, so the inbox,
    which orders by id, lists it where it appeared rather than where it was accepted)."""
    return encode((when_ms << 80) | int.from_bytes(os.urandom(10), "big"))
