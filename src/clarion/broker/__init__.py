"""Cross-node fan-out of committed events, chosen by URL: memory://, redis://, nats://."""

from clarion.broker.base import Broker, EventHandler, ResetHandler, open_broker

__all__ = ["Broker", "EventHandler", "ResetHandler", "open_broker"]
