"""uvicorn's WebSocket protocol, extended to let the hub write pre-framed bytes directly.

Why: the ASGI `send()` path re-frames and awaits per message (tens of microseconds); a
broadcast writes one shared, already-framed buffer to each socket's transport instead. The
extension is named `clarion.raw` in the ASGI scope; without it (another server) the endpoint
falls back to plain ASGI sends.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class ClarionWebSocketProtocol(WebSocketsSansIOProtocol):
    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"]["clarion.raw"] = self
