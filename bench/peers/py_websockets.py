"""Peer: a `websockets` (asyncio implementation) server on uvloop, broadcasting with
``websockets.broadcast`` (encode once, write to every connection without awaiting).

WebSocket on --port; the control routes (see common.py) on a tiny HTTP server on --control-port,
since a websockets server only answers GET upgrade requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import uvloop
from common import control, encode, now_ms, payload
from websockets.asyncio.server import ServerConnection, broadcast, serve

CLIENTS: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    CLIENTS.add(ws)
    try:
        await ws.wait_closed()
    finally:
        CLIENTS.discard(ws)


async def send_burst(count: int, size: int, burst: int, t: float | None) -> None:
    for seq in range(1, count + 1):
        broadcast(CLIENTS, encode(payload(burst, seq, t if t is not None else now_ms(), size)))
        await asyncio.sleep(0)


async def http_control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body = await reader.readexactly(length) if length else b""
        status, obj = await control(method, path, body, send_burst, lambda: len(CLIENTS))
        data = json.dumps(obj).encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\nconnection: close\r\n\r\n".encode()
            + data
        )
        await writer.drain()
    finally:
        writer.close()


async def main(port: int, control_port: int) -> None:
    ctl = await asyncio.start_server(http_control, "127.0.0.1", control_port)
    async with serve(handler, "127.0.0.1", port, compression=None, backlog=4096), ctl:
        print(f"py_websockets on {port} (control {control_port})", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9003)
    parser.add_argument("--control-port", type=int, default=9004)
    args = parser.parse_args()
    uvloop.run(main(args.port, args.control_port))
