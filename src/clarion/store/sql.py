"""The SQL store: SQLite (embedded default, WAL) and PostgreSQL through SQLAlchemy 2 async.

`SQLStore` is the one facade, composed of rooms (one file a concern) over one shared
`Database` (store/db.py); a room reaches SQL only through `db.read()`, `db.write()`,
`db.insert()` and `db.run()`, and other rooms only through their public functions.
"""

from __future__ import annotations

from clarion.store.audiences import Audiences
from clarion.store.db import Database
from clarion.store.inbox import Inbox
from clarion.store.keys import ApiKeys
from clarion.store.publish import Publishing
from clarion.store.push import PushStore
from clarion.store.retention import Retention
from clarion.store.settings import StoredSettings, TypeCache
from clarion.store.streams import StreamReads


class SQLStore(StreamReads, Audiences, Inbox, Publishing, StoredSettings, ApiKeys, Retention):
    """The one store implementation (see store/db.py for the locking model)."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL") -> None:
        self.db = Database(url, sqlite_synchronous=sqlite_synchronous)
        self.types = TypeCache()
        self.push = PushStore(self.db)  # Web Push subscriptions and outbox

    async def connect(self) -> None:
        await self.db.connect()

    async def close(self) -> None:
        await self.db.close()

    async def ping(self) -> None:
        await self.db.ping()


def open_store(url: str) -> SQLStore:
    """The store for a database URL (`sqlite:///...` or `postgresql://...`)."""
    return SQLStore(url)
