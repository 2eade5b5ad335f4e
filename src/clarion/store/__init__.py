"""Durable state: notifications, streams, inbox state, keys. The source of truth."""

from clarion.store.base import Store, StoredEvent
from clarion.store.sql import SQLStore, open_store

__all__ = ["SQLStore", "Store", "StoredEvent", "open_store"]
