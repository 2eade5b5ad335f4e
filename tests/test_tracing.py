"""Traces (tracing.py): spans reach an OTLP/HTTP collector when the standard variable is set,
and nothing of OpenTelemetry is loaded when it is not."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from harness.server import Server
from harness.services import node_database
from harness.util import eventually, send, user_id


class Collector:
    """A tiny OTLP/HTTP trace receiver: decodes each export into spans."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        spans, resources = self.spans, self.resources

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for rs in request.resource_spans:
                    resources.append({a.key: a.value.string_value for a in rs.resource.attributes})
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            attrs = {a.key: a.value for a in s.attributes}
                            spans.append(
                                {
                                    "name": s.name,
                                    "trace": s.trace_id.hex(),
                                    "id": s.span_id.hex(),
                                    "parent": s.parent_span_id.hex(),
                                    "attrs": attrs,
                                    "path": self.path,
                                }
                            )
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def named(self, name: str) -> list[dict[str, Any]]:
        return [s for s in self.spans if s["name"] == name]


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.http.shutdown()


def test_publish_and_fanout_spans_reach_the_collector(collector: Collector, tmp_path: Path) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "clarion-test",
    }
    with node_database() as db:
        srv = Server(tmp_path, {**db, **env}).start()
        try:
            user = user_id()
            live = srv.connect(user)
            nid = send(srv, users=[user], title="traced")
            live.until("notification")
            live.close()
            eventually(lambda: collector.named("clarion.fanout"), what="a fanout span")
            eventually(lambda: collector.named("clarion.publish"), what="the publish span")
        finally:
            srv.kill(signal.SIGTERM)
    (root,) = [
        s
        for s in collector.named("clarion.publish")
        if s["attrs"]["clarion.notification_id"].string_value == nid
    ]
    assert root["parent"] == "" and root["attrs"]["type"].string_value
    children = {s["name"]: s for s in collector.spans if s["parent"] == root["id"]}
    assert {"clarion.publish.validate", "clarion.publish.commit"} <= set(children)
    # Group commit runs in the first publish's context; here there is only this one.
    broker = next(
        s for s in collector.named("clarion.publish.broker") if s["trace"] == root["trace"]
    )
    fanouts = [s for s in collector.named("clarion.fanout") if s["trace"] == root["trace"]]
    assert fanouts and fanouts[0]["parent"] == broker["id"]  # in-process broker: same trace
    assert fanouts[0]["attrs"]["clarion.sessions"].int_value == 1
    assert all(s["path"] == "/v1/traces" for s in collector.spans)
    assert collector.resources[0]["service.name"] == "clarion-test"


def test_without_the_variable_the_sdk_is_never_imported() -> None:
    """(redis-py imports the OpenTelemetry *API* when it is installed: a no-op by itself.)"""
    code = (
        "import sys, asyncio\n"
        "from clarion.config import load_settings\n"
        "from clarion.app import create_app\n"
        "from clarion import tracing\n"
        "create_app(load_settings(database_url='sqlite:///:memory:'))\n"
        "assert not tracing.start() and not tracing.enabled()\n"
        "assert tracing.span('x') is tracing.NOSPAN\n"
        "prefixes = ('opentelemetry.sdk', 'opentelemetry.exporter', 'opentelemetry.proto')\n"
        "loaded = [m for m in sys.modules if m.startswith(prefixes)]\n"
        "print(loaded)\n"
        "assert not loaded, loaded\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
