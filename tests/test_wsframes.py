"""RFC 6455 client frames as transports/wsframes.py reads them: pure functions, checked against
frames built by `websockets`' own serializer (a masked client frame), byte by byte."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from clarion.transports.wsframes import (
    BINARY,
    CLOSE,
    PING,
    TEXT,
    Failure,
    close_frame,
    frame_at,
    parse,
)

MAX = 64 * 1024


def raw(first: int, payload: bytes) -> bytes:
    """A masked frame websockets would refuse to build (a zero mask: the payload as is)."""
    n = len(payload)
    length = bytes([0x80 | n]) if n < 126 else bytes([0xFE]) + n.to_bytes(2, "big")
    return bytes([first]) + length + b"\0\0\0\0" + payload


def client(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    """A frame as a browser sends it: masked, by websockets' serializer."""
    return Frame(opcode, data, fin).serialize(mask=True)


def test_a_text_frame_split_anywhere_is_read_once_whole() -> None:
    wire = client(Opcode.TEXT, '{"type":"ping","é":1}'.encode()) + client(Opcode.PING, b"hi")
    for cut in range(len(wire)):
        first = parse(wire[:cut], None, MAX)
        second = parse(first.rest + wire[cut:], first.parts, MAX)
        events = first.events + second.events
        assert [(e.opcode, e.data) for e in events] == [
            (TEXT, '{"type":"ping","é":1}'),
            (PING, b"hi"),
        ]
        assert second.rest == b"" and second.parts is None


def test_lengths_of_16_and_64_bits_and_fragments_are_joined() -> None:
    big = b"x" * 70_000
    wire = (
        client(Opcode.TEXT, b"a" * 300, fin=False)
        + client(Opcode.PING, b"")  # a control frame may come between fragments
        + client(Opcode.CONT, b"b", fin=True)
        + client(Opcode.BINARY, big)
    )
    events = parse(wire, None, 100_000).events
    assert [e.opcode for e in events] == [PING, TEXT, BINARY]
    assert events[1].data == "a" * 300 + "b"
    assert events[2].data == big


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (Frame(Opcode.TEXT, b"x").serialize(mask=False), 1002),  # unmasked
        (client(Opcode.CONT, b"x"), 1002),  # continuation with nothing to continue
        (client(Opcode.TEXT, b"x", fin=False) + client(Opcode.TEXT, b"y"), 1002),
        (raw(0x89, b"x" * 126), 1002),  # control frame over 125 bytes
        (raw(0x09, b"x"), 1002),
        (bytes([0x83, 0x80]) + b"\0\0\0\0", 1002),  # reserved opcode
        (bytes([0xC1, 0x80]) + b"\0\0\0\0", 1002),  # RSV1 without an extension
        (client(Opcode.TEXT, b"\xff\xfe"), 1007),  # not UTF-8
        (client(Opcode.CLOSE, b"\x03\xe8\xff"), 1007),  # close reason not UTF-8
        (client(Opcode.CLOSE, b"\x03\xed"), 1002),  # 1005 may not be sent
        (client(Opcode.CLOSE, b"\x03"), 1002),  # one byte
        (client(Opcode.TEXT, b"x" * (MAX + 1)), 1009),
        (client(Opcode.TEXT, b"x" * MAX, fin=False) + client(Opcode.CONT, b"y"), 1009),
    ],
    # Named: masked frames differ per collection (random masks), and xdist's workers must
    # collect the same test ids.
    ids=[
        "unmasked",
        "orphan-continuation",
        "text-inside-fragments",
        "long-control",
        "fragmented-control",
        "reserved-opcode",
        "rsv1",
        "bad-utf8",
        "close-reason-bad-utf8",
        "close-1005",
        "close-one-byte",
        "oversized",
        "oversized-fragments",
    ],
)
def test_what_a_client_may_not_send_fails_with_its_code(wire: bytes, code: int) -> None:
    with pytest.raises(Failure) as failed:
        parse(wire, None, MAX)
    assert failed.value.code == code


def test_a_giant_is_refused_from_its_header_alone() -> None:
    header = bytes([0x81, 0xFF]) + (2**40).to_bytes(8, "big")  # no payload sent yet
    with pytest.raises(Failure) as failed:
        frame_at(header, 0, MAX)
    assert failed.value.code == 1009


def test_a_close_frame_ends_the_read_and_is_parsed() -> None:
    wire = client(Opcode.CLOSE, b"\x03\xe8bye") + client(Opcode.TEXT, b"after")
    parsed = parse(wire, None, MAX)
    assert [(e.opcode, e.code, e.reason) for e in parsed.events] == [(CLOSE, 1000, "bye")]
    assert parsed.rest == b""
    assert parse(client(Opcode.CLOSE, b""), None, MAX).events[0].code == 1005


def test_close_frames_fit_a_control_frame_at_a_character_boundary() -> None:
    frame = close_frame(4001, "é" * 100)
    assert frame[0] == 0x88 and frame[1] == len(frame) - 2 <= 125
    assert frame[2:4] == (4001).to_bytes(2, "big")
    assert frame[4:].decode() == "é" * 61
    assert parse(client(Opcode.BINARY, b"\x00"), None, MAX).events[0].opcode == BINARY
