"""Durable state: notifications, streams, inbox state, keys. The source of truth."""

from clarion.store.base import Store
from clarion.store.sql import SQLStore, open_store

__all__ = ["SQLStore", "Store", "open_store"]
