"""Schema upgrades with Alembic, run on start (and by `clarion db upgrade`).

Upgrading on start keeps `clarion serve` a one-command start; several nodes starting together
are safe because PostgreSQL upgrades hold an advisory lock and SQLite ones `BEGIN IMMEDIATE`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).with_name("migrations")
_LOCK_ID = 0x0C1A7105


def _config(connection: Any) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text(f"SELECT pg_advisory_xact_lock({_LOCK_ID})"))
        await conn.run_sync(lambda sync: command.upgrade(_config(sync), revision))
