"""Outbound connections to URLs that users chose (Web Push endpoints) reach only the public
internet.

A URL's text says little about where it leads: `127.1`, `0x7f.0.0.1`, `localhost.` and
`metadata.google.internal` all name the inside of the server's own network, and a name that
resolved to a public address when it was registered may resolve to a private one when it is
used (DNS rebinding). So there are two checks: at registration, the host must be written the
one canonical way (`canonical_host_error`), and at send time the address actually connected
to is checked after resolution (`PublicOnly`, an httpcore network backend), so no spelling
and no resolver answer gets past it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
from httpcore._backends.anyio import AnyIOBackend

LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# The last label of a public name is letters (or an IDN's `xn--`): never digits or hex,
# which resolvers would read as an address.
TLD = re.compile(r"^(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})$")
# Names for the inside of a network or a cloud's metadata service (RFC 6761, 6762, 8375 and
# the names clouds document), refused whatever they resolve to.
INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa", ".arpa", ".lan", ".goog")
INTERNAL_NAMES = {"localhost", "metadata", "instance-data"}


class RefusedAddress(Exception):
    """The host resolved to an address Clarion does not send to."""


def public_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_loopback: bool) -> bool:
    """Whether Clarion may connect there: a global address (or 127.0.0.1 when allowed)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if allow_loopback and ip == ipaddress.IPv4Address("127.0.0.1"):
        return True
    return ip.is_global and not ip.is_multicast


def canonical_host_error(host: str) -> str | None:
    """Why a URL's host is refused (None: acceptable): an IP written canonically must be
    public; a name must be lowercase letters, digits and hyphens in dotted labels ending in
    a letters-only top-level label, without a trailing dot, and not an internal name."""
    if not host:
        return "the endpoint has no host"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return None if public_ip(ip, False) else "the endpoint must be a public address"
    labels = host.split(".")
    if host.endswith(".") or not all(LABEL.match(label) for label in labels):
        return "the endpoint's host must be a plain DNS name (no trailing dot, no odd spelling)"
    if len(labels) < 2 or not TLD.match(labels[-1]):
        return "the endpoint must be a public host"
    if host in INTERNAL_NAMES or labels[0] in INTERNAL_NAMES or host.endswith(INTERNAL_SUFFIXES):
        return "the endpoint must be a public host"
    return None


class PublicOnly(httpcore.AsyncNetworkBackend):
    """Resolves, checks every address, and connects to a checked one: what was checked is what
    is connected to. TLS still verifies the certificate against the URL's host name."""

    def __init__(self, allow_loopback: bool) -> None:
        self.allow_loopback = allow_loopback
        self.inner = AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 -- httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:  # a resolver failure is a network error: retried later
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        refused = [a for a in addresses if not public_ip(a, self.allow_loopback)]
        if refused:
            raise RefusedAddress(f"{host} resolves to a non-public address ({refused[0]})")
        return await self.inner.connect_tcp(
            str(addresses[0]),
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class PublicTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a `PublicOnly` connection pool."""

    def __init__(self, max_connections: int, allow_loopback: bool) -> None:
        super().__init__()
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=max_connections,
            network_backend=PublicOnly(allow_loopback),
        )
