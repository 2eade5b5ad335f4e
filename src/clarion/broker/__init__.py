"""Cross-node fan-out of committed events, chosen by URL: memory://, redis://, nats://.

The factory lives here, above the backends, so `base.py` (which every backend imports) imports
none of them; each backend is imported only when its scheme is asked for.
"""

from clarion.broker.base import Broker, EventHandler, ResetHandler


def open_broker(url: str) -> Broker:
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        from clarion.broker.memory import MemoryBroker

        return MemoryBroker()
    if scheme in ("redis", "rediss"):
        from clarion.broker.redis import RedisBroker

        return RedisBroker(url)
    if scheme in ("nats", "tls"):
        from clarion.broker.nats import NatsBroker

        return NatsBroker(url)
    raise ValueError(f"unsupported broker URL {url!r}: use memory://, redis:// or nats://")


__all__ = ["Broker", "EventHandler", "ResetHandler", "open_broker"]
