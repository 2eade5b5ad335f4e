"""Client frames of RFC 6455, parsed without a parser object: pure functions over bytes.

A detached WebSocket (transports/rawws.py) keeps, between two reads, the bytes of an unfinished
frame and the parts of an unfinished message, nothing else: `websockets`' sans-I/O protocol
holds a parser generator, a stream reader and a dozen attributes per connection, more than the
rest of an idle connection together (docs/benchmarks.md). Clients send Clarion a ping or a token
refresh now and then, so what matters is what the parser costs while it waits, not its speed.
The masking (`apply_mask`, C-accelerated) and the close payload's checks (`Close.parse`: code and
UTF-8 reason) are `websockets`' own; the framing rules (section 5) are here.
"""

from __future__ import annotations

from typing import NamedTuple

from websockets.exceptions import ProtocolError
from websockets.frames import Close
from websockets.utils import apply_mask

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA = (CONT, TEXT, BINARY)
_KNOWN = (CONT, TEXT, BINARY, CLOSE, PING, PONG)
PROTOCOL_ERROR, INVALID_DATA, TOO_BIG = 1002, 1007, 1009


class Failure(Exception):
    """The client broke the protocol: close the connection with `code` (1002, 1007, 1009)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class Event(NamedTuple):
    """A complete message or control frame: `opcode` TEXT (`data` is the text, checked
    UTF-8), BINARY, PING, PONG or CLOSE (`data` is the raw payload, `code`/`reason` parsed)."""

    opcode: int
    data: bytes | str
    code: int = 0
    reason: str = ""


class Parsed(NamedTuple):
    events: list[Event]
    rest: bytes  # the start of an unfinished frame
    parts: list[bytes] | None  # an unfinished fragmented message: its opcode's frame first


def frame_at(buf: bytes, at: int, max_size: int) -> tuple[int, bool, bytes, int] | None:
    """The frame starting at `buf[at]` as (opcode, fin, unmasked payload, end offset), or None
    if it is not all there yet. The length is checked against `max_size` as soon as the header
    is read, so an announced giant is refused before its bytes are buffered."""
    size = len(buf)
    if size - at < 2:
        return None
    b0, b1 = buf[at], buf[at + 1]
    if b0 & 0x70:
        raise Failure(PROTOCOL_ERROR, "reserved bits must be 0")
    opcode, fin = b0 & 0x0F, bool(b0 & 0x80)
    if opcode not in _KNOWN:
        raise Failure(PROTOCOL_ERROR, f"invalid opcode {opcode:#x}")
    if not b1 & 0x80:
        raise Failure(PROTOCOL_ERROR, "a client's frames must be masked")
    length = b1 & 0x7F
    pos = at + 2
    if length >= 126:
        width = 2 if length == 126 else 8
        if size - pos < width:
            return None
        length = int.from_bytes(buf[pos : pos + width], "big")
        pos += width
    if opcode >= CLOSE and (length > 125 or not fin):
        raise Failure(PROTOCOL_ERROR, "control frame fragmented or over 125 bytes")
    if length > max_size:
        raise Failure(TOO_BIG, f"frame too big (limit {max_size} bytes)")
    end = pos + 4 + length
    if size < end:
        return None
    return opcode, fin, apply_mask(buf[pos + 4 : end], buf[pos : pos + 4]), end


def parse(buf: bytes, parts: list[bytes] | None, max_size: int) -> Parsed:
    """The events in `buf` (what was left from the last read plus what came), given the parts of
    a fragmented message already received. Raises `Failure` for anything RFC 6455 forbids of a
    client (section 5, 7.4, 8.1), and for messages over `max_size` bytes."""
    events: list[Event] = []
    at = 0
    while True:
        frame = frame_at(buf, at, max_size)
        if frame is None:
            break
        opcode, fin, payload, at = frame
        if opcode in _DATA:
            if (opcode == CONT) != (parts is not None):
                raise Failure(PROTOCOL_ERROR, "unexpected continuation or unfinished message")
            if parts is None:
                parts = [bytes([opcode])]
            parts.append(payload)
            if sum(map(len, parts)) - 1 > max_size:
                raise Failure(TOO_BIG, f"message too big (limit {max_size} bytes)")
            if fin:
                events.append(_message(parts))
                parts = None
        elif opcode == CLOSE:
            events.append(_close(payload))
            return Parsed(events, b"", parts)  # nothing is read after a close frame
        else:
            events.append(Event(opcode, payload))
    return Parsed(events, bytes(buf[at:]) if at else buf, parts)


def _message(parts: list[bytes]) -> Event:
    opcode = parts[0][0]
    data = parts[1] if len(parts) == 2 else b"".join(parts[1:])
    if opcode == BINARY:
        return Event(BINARY, data)
    try:
        return Event(TEXT, data.decode())
    except UnicodeDecodeError:
        raise Failure(INVALID_DATA, "text is not UTF-8") from None


def _close(payload: bytes) -> Event:
    try:
        close = Close.parse(payload)
    except UnicodeDecodeError:
        raise Failure(INVALID_DATA, "close reason is not UTF-8") from None
    except ProtocolError as exc:
        raise Failure(PROTOCOL_ERROR, str(exc)) from None
    return Event(CLOSE, payload, close.code, close.reason)


def close_frame(code: int, reason: str = "") -> bytes:
    """A server's close frame (unmasked), the reason cut to fit a control frame's 125 bytes
    at a character boundary."""
    data = reason.encode()[:123].decode(errors="ignore").encode()
    payload = code.to_bytes(2, "big") + data
    return bytes([0x80 | CLOSE, len(payload)]) + payload


def control_frame(opcode: int, payload: bytes) -> bytes:
    """A server's ping or pong (unmasked); `payload` is at most 125 bytes (checked on input)."""
    return bytes([0x80 | opcode, len(payload)]) + payload
