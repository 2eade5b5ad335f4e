"""Peer: a python-socketio ASGI server on uvicorn (uvloop, httptools), broadcasting with
``sio.emit``. The control routes (see common.py) are served by the same ASGI app."""

from __future__ import annotations

import argparse
import json
from typing import Any

import socketio
import uvicorn
from common import control, now_ms, payload

sio = socketio.AsyncServer(async_mode="asgi", transports=["websocket"], cors_allowed_origins="*")
CLIENTS: set[str] = set()


@sio.event
async def connect(sid: str, environ: dict[str, Any]) -> None:
    CLIENTS.add(sid)


@sio.event
async def disconnect(sid: str, *args: Any) -> None:
    CLIENTS.discard(sid)


async def send_burst(count: int, size: int, burst: int, t: float | None) -> None:
    for seq in range(1, count + 1):
        await sio.emit("bench", payload(burst, seq, t if t is not None else now_ms(), size))


async def control_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    status, obj = await control(
        scope["method"], scope["path"], body, send_burst, lambda: len(CLIENTS)
    )
    data = json.dumps(obj).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


app = socketio.ASGIApp(sio, other_asgi_app=control_app)

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9005)
    args = parser.parse_args()
    print(f"py_socketio on {args.port}", flush=True)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        backlog=4096,
    )
