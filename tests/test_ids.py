"""Ids: 26 Crockford base32 characters (two at a time from a table, ids.py), the same
characters the per-character loop gave, and strictly increasing per process."""

from __future__ import annotations

import random

import pytest

from clarion.ids import _ALPHABET, encode, id_at, new_id


def by_loop(value: int) -> str:
    """The encoding as it was written first: 5 bits at a time, least significant first."""
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


EDGES = {
    "zero": 0,
    "one": 1,
    "31": 31,
    "32": 32,
    "max-128-bits": (1 << 128) - 1,
    "max-130-bits": (1 << 130) - 1,
    "over-130-bits": (1 << 131) + 5,  # only the low 130 bits are kept, as by the loop
    "now": (1_796_000_000_000 << 80) | 0xABCDEF,
}


@pytest.mark.parametrize("name", list(EDGES), ids=list(EDGES))
def test_encode_gives_the_loops_characters(name: str) -> None:
    assert encode(EDGES[name]) == by_loop(EDGES[name])


def test_encode_gives_the_loops_characters_for_random_values() -> None:
    rng = random.Random(17)
    for _ in range(2000):
        value = rng.getrandbits(128)
        assert encode(value) == by_loop(value)


def test_ids_increase_and_keep_their_time() -> None:
    ids = [new_id() for _ in range(1000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(len(i) == 26 and set(i) <= set(_ALPHABET) for i in ids)
    assert id_at(1_796_000_000_000)[:10] == by_loop(1_796_000_000_000 << 80)[:10]
