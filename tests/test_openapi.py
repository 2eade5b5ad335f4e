"""Schemathesis over the OpenAPI document, against a real node: no answer is a 5xx, and every
answer (status, content type, body) is one the document declares.

Each operation runs with the credentials its security scheme names: an admin API key for
`ApiKey` operations, a user JWT for `UserJWT` ones. Bounded: FUZZ_EXAMPLES per operation
(`CLARION_FUZZ_EXAMPLES` to change it), a few minutes in all.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from harness.server import Server

pytestmark = pytest.mark.slow  # a whole-system run: `make test-slow`

FUZZ_EXAMPLES = int(os.environ.get("CLARION_FUZZ_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Generous limits: the fuzzer is one client, sending fast.
ENV = {
    "CLARION_RATE_LIMIT_USER": "100000/second",
    "CLARION_RATE_LIMIT_IP": "100000/second",
    "CLARION_RATE_LIMIT_PUBLISH": "100000/second",
}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    server = Server(Path(tmp_path_factory.mktemp("fuzz")), ENV).start()
    admin = server.cli("keys", "create", "--scope", "admin", "--name", "fuzz")
    auth = {"ApiKey": f"Bearer {admin}", "UserJWT": f"Bearer {server.token('fuzz-user')}"}
    yield server, auth
    server.kill(signal.SIGTERM)


def fuzz(operation: Any, headers: dict[str, str]) -> None:
    """FUZZ_EXAMPLES generated requests to one operation, each checked."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()


@pytest.mark.timeout(600)
def test_api_answers_as_documented(fuzzed: tuple[Server, dict[str, str]]) -> None:
    """Every operation in turn (schemathesis' pytest plugin does not run on this pytest);
    the failures of all of them are reported together."""
    server, auth = fuzzed
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    failures: dict[str, str] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        security = operation.definition.raw.get("security", [])
        schemes = [name for requirement in security for name in requirement]
        try:
            fuzz(operation, {"Authorization": auth[schemes[0]]} if schemes else {})
        except (Exception, BaseExceptionGroup) as exc:
            failures[operation.label] = str(exc)[:1500]
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
