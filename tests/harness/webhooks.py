"""The tests' own webhook endpoint: a real HTTP server on loopback that verifies every
Standard Webhooks signature (with the `standardwebhooks` package, as a receiver would) and can
fail its first answers, to see retries."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from standardwebhooks.webhooks import Webhook


class Receiver:
    """The tests' own webhook endpoint: verifies every signature, fails its first answers."""

    def __init__(self, fail_first: int) -> None:
        self.secret = ""
        self.fail_left = fail_first
        self.received: list[tuple[str, dict[str, Any]]] = []  # (webhook-id, body), in order
        self.bad_signatures = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with outer.lock:
                    try:
                        Webhook(outer.secret).verify(body, dict(self.headers.items()))
                    except Exception:
                        outer.bad_signatures += 1
                        self.send_response(400)
                        self.end_headers()
                        return
                    if outer.fail_left > 0:
                        outer.fail_left -= 1
                        self.send_response(503)
                        self.end_headers()
                        return
                    outer.received.append((self.headers["webhook-id"], orjson.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/hook"

    def events(self, user: str) -> list[str]:
        """The events for `user`, once each (by webhook-id), in the order first received."""
        seen: set[str] = set()
        out = []
        with self.lock:
            for wid, body in self.received:
                if wid not in seen and body["data"].get("user") == user:
                    seen.add(wid)
                    out.append(body["type"])
        return out

    def close(self) -> None:
        self.http.shutdown()
