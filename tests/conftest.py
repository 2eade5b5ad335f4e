"""Fixtures over the test harness (`tests/harness/`): real `clarion serve` processes on free
ports. Test modules import helpers from `harness.*`, never from here."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from clarion.store import SQLStore
from harness.server import Server
from harness.services import node_database, postgres_database


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One shared node for tests that do not restart it."""
    with node_database() as env:
        srv = Server(tmp_path_factory.mktemp("shared"), env).start()
        yield srv
        srv.kill(signal.SIGTERM)


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """A node of the test's own, free to be killed and restarted."""
    with node_database() as env:
        srv = Server(tmp_path, env)
        yield srv
        srv.kill()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of the test module's own (skipped without PostgreSQL)."""
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def sql_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A store URL of the module's own, on SQLite and then on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'clarion.db'}"
    else:
        with postgres_database() as pg:
            yield pg


@pytest.fixture
async def sql_store(sql_url: str) -> AsyncIterator[SQLStore]:
    """An in-process store, connected (no server), on each of `sql_url`'s databases."""
    s = SQLStore(sql_url)
    await s.connect()
    try:
        yield s
    finally:
        await s.close()
