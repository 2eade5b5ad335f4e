"""The SQL store: SQLite (embedded default, WAL) and PostgreSQL through SQLAlchemy 2 async.

`SQLStore` is the one facade, composed of rooms (one file a concern) over one shared
`Database` (store/db.py); a room reaches SQL only through `db.read()`, `db.write()`,
`db.insert()` and `db.run()`, and other rooms only through their public functions.
"""

from __future__ import annotations

from clarion.store.audiences import Audiences
from clarion.store.db import Database
from clarion.store.deliveries import DeliveryLog
from clarion.store.email import EmailOutbox
from clarion.store.escalations import Escalations
from clarion.store.inbox import Inbox
from clarion.store.keys import ApiKeys
from clarion.store.lookup import Lookup
from clarion.store.nodes import NodeStats
from clarion.store.presence import PresenceStore
from clarion.store.profiles import Profiles
from clarion.store.publish import Publishing
from clarion.store.push import PushStore
from clarion.store.recall import Recalls
from clarion.store.retention import Retention
from clarion.store.schedule import Scheduling
from clarion.store.settings import StoredSettings, TypeCache
from clarion.store.streams import StreamReads
from clarion.store.webhooks import WebhookStore


class SQLStore(
    StreamReads,
    Audiences,
    Inbox,
    Publishing,
    StoredSettings,
    ApiKeys,
    Retention,
    Scheduling,
    Recalls,
    DeliveryLog,
    Profiles,
    Escalations,
):
    """The one store implementation (see store/db.py for the locking model)."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL") -> None:
        self.db = Database(url, sqlite_synchronous=sqlite_synchronous)
        self.types = TypeCache()
        self.push = PushStore(self.db)  # Web Push subscriptions and outbox
        self.webhooks = WebhookStore(self.db)  # outbound webhooks: endpoints, outbox, attempts
        self.presence = PresenceStore(self.db)  # live connections per node, user, transport
        self.lookup = Lookup(self.db)  # the console's searches, outbox metrics
        self.email = EmailOutbox(self.db)  # the email outbox (store/email.py)
        self.nodes = NodeStats(self.db)  # each node's stats snapshot (the console's Live page)

    async def connect(self) -> None:
        await self.db.connect()

    async def close(self) -> None:
        await self.db.close()

    async def ping(self) -> None:
        await self.db.ping()


def open_store(url: str) -> SQLStore:
    """The store for a database URL (`sqlite:///...` or `postgresql://...`)."""
    return SQLStore(url)
