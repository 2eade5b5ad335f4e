"""Cursors: the opaque position clients carry between connections (docs/protocol.md)."""

from __future__ import annotations

import base64
import random
import re

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clarion.streams import (
    MAX_CURSOR_LEN,
    MAX_CURSOR_STREAMS,
    cursor_head,
    cursor_tail,
    decode_cursor,
    encode_cursor,
)

# Stream names never hold control characters (cursors with them are refused, see below).
stream_names = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=40)
seqs = st.integers(min_value=0, max_value=2**63 - 1)
positions = st.dictionaries(stream_names, seqs, max_size=30)


def raw_cursor(value: object) -> str:
    """A cursor built by hand, bypassing encode_cursor's checks."""
    return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()


@given(positions)
def test_round_trip(position: dict[str, int]) -> None:
    cursor = encode_cursor(position)
    assert re.fullmatch(r"[A-Za-z0-9_-]*", cursor), "unpadded base64url only"
    assert decode_cursor(cursor) == position


@given(positions, st.data())
def test_sse_id_head_and_tail_are_the_cursor(position: dict[str, int], data: st.DataObject) -> None:
    """The SSE hot path's `id:` (a head per connection, a tail per event) is a cursor every
    decoder of the format reads as the position: base64url of one JSON object."""
    moved = data.draw(st.sampled_from(sorted(position)) if position else stream_names)
    position.setdefault(moved, data.draw(seqs))
    head, tail = cursor_head(position, moved), cursor_tail(moved, position[moved])
    assert len(head) % 4 == 0 and b"=" not in head, "the head ends on a base64 group"
    cursor = (head + tail).decode()
    assert re.fullmatch(r"[A-Za-z0-9_-]*", cursor), "unpadded base64url only"
    assert decode_cursor(cursor) == position
    assert orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))) == position


@given(positions, st.randoms(use_true_random=False))
def test_equal_positions_encode_equally(position: dict[str, int], rnd: random.Random) -> None:
    items = list(position.items())
    rnd.shuffle(items)
    assert encode_cursor(dict(items)) == encode_cursor(position)


def test_documented_example_decodes() -> None:
    assert decode_cursor("eyJ1c2VyOmFsaWNlIjoxMiwiYWxsIjo1N30") == {"user:alice": 12, "all": 57}


@pytest.mark.parametrize("empty", [None, ""])
def test_no_cursor_means_from_now_on(empty: str | None) -> None:
    assert decode_cursor(empty) == {}
    assert decode_cursor(encode_cursor({})) == {}


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!!",
        "not a cursor",
        "eyJh\nIjoxfQ",
        "é",
        "e",  # one base64 character cannot hold a byte
        base64.urlsafe_b64encode(b"\xff\xfe{").decode(),
        raw_cursor("just a string")[:-2],
        base64.urlsafe_b64encode(b'{"a": 1').decode(),
    ],
)
def test_garbage_is_refused(cursor: str) -> None:
    with pytest.raises(ValueError, match="cursor"):
        decode_cursor(cursor)


@pytest.mark.parametrize(
    "value",
    [
        ["user:a", 1],
        "user:a",
        7,
        None,
        {"user:a": -1},
        {"user:a": True},
        {"user:a": False},
        {"user:a": 1.5},
        {"user:a": 1.0},
        {"user:a": "3"},
        {"user:a": None},
        {"user:a": [1]},
        {"user:a": {"seq": 1}},
        {"user:a": 1, "all": -2},
        {f"topic:{i}": 1 for i in range(MAX_CURSOR_STREAMS + 1)},
    ],
    ids=lambda v: type(v).__name__ + ":" + str(v)[:30],
)
def test_wrong_shapes_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="cursor"):
        decode_cursor(raw_cursor(value))


def test_at_the_stream_limit_is_accepted() -> None:
    position = {f"topic:{i}": i for i in range(MAX_CURSOR_STREAMS)}
    assert decode_cursor(encode_cursor(position)) == position


def test_too_long_is_refused_before_decoding() -> None:
    with pytest.raises(ValueError, match="too long"):
        decode_cursor("A" * (MAX_CURSOR_LEN + 1))
    long_but_valid = encode_cursor({"user:" + "x" * MAX_CURSOR_LEN: 1})
    with pytest.raises(ValueError, match="too long"):
        decode_cursor(long_but_valid)


@given(st.text(max_size=200))
def test_any_text_decodes_or_raises_value_error(text: str) -> None:
    try:
        position = decode_cursor(text)
    except ValueError:
        return
    assert all(isinstance(k, str) for k in position)
    assert all(type(v) is int and v >= 0 for v in position.values())


def test_a_page_cursor_round_trips_and_refuses_what_a_stream_cursor_refuses() -> None:
    from clarion.inbox import PagePosition

    position = PagePosition({"all": 12, "user:ann": 3}, "01M8NVB7KXT3N3EQMTNZTZ5YWN")
    again = PagePosition.decode(position.encode())
    assert (again.streams, again.extra) == (position.streams, position.extra)
    for bad in (
        PagePosition({"all\x00": 1}).encode(),
        PagePosition({"all": -1}).encode(),
        PagePosition({"all": 1}, "not an id").encode(),
        "!!!",
    ):
        with pytest.raises(ValueError):
            PagePosition.decode(bad)
