"""Where outbound webhooks may go (gateway/webhooks/service.py): partner subscription URLs cannot be turned against
the gateway's own network (SSRF). Here, beside the HTTP code, because the settings check the same rules at start-up.

- `https` only; `http` when `webhooks.allow_http: true` (the demo's loopback partners; never in production);
- the host must resolve to public addresses only: loopback, private (RFC 1918, ULA), link-local (169.254/16, where
  cloud metadata services answer), carrier-grade NAT (100.64/10, Alibaba's metadata), unspecified, multicast,
  reserved and documentation ranges are refused, including when wrapped in IPv6 (IPv4-mapped, NAT64, 6to4,
  Teredo), unless the address is in `webhooks.allow_networks` (CIDRs);
- the name is resolved once per connection, by the connector's resolver below, and that connection is made to the
  addresses just checked: there is no second lookup a DNS-rebinding answer could slip into (aiohttp's DNS cache is
  off, so every new connection is checked again);
- redirects are not followed (a 3xx is a failed delivery), so a public endpoint cannot bounce us inward.

A refused address is a dead letter at once with the reason (`egress refused: ...`); the operator sees it and can
replay it after fixing the subscription or the allow-list. The same rules run at start-up on the configured URLs,
so a literal private address or a plain-http URL refuses to start.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Lookup = Callable[[str, int, int], Awaitable[list[tuple[Any, ...]]]]
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class EgressRefused(Exception):
    """The URL or the address it resolves to is not allowed for outbound webhooks; the message says why."""


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    if addr in NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


class EgressPolicy:
    def __init__(self, allow_http: bool = False, allow_networks: list[str] | None = None) -> None:
        self.allow_http = allow_http
        self.networks = [ipaddress.ip_network(n, strict=False) for n in allow_networks or []]

    def address_allowed(self, addr: Address) -> bool:
        if any(addr in net for net in self.networks):
            return True
        if isinstance(addr, ipaddress.IPv6Address):
            inner = _embedded_ipv4(addr)
            if inner is not None:
                return self.address_allowed(inner)
        return addr.is_global and not addr.is_multicast

    def check_address(self, host: str, addr: Address) -> None:
        if not self.address_allowed(addr):
            raise EgressRefused(f"{host} resolves to {addr}, a non-public address (allow-list it in "
                                "webhooks.allow_networks if it is really meant)")

    def check_url(self, url: str) -> None:
        """The scheme, and the host when it is an IP literal (aiohttp connects to those without resolving)."""
        parts = urlsplit(url)
        if parts.scheme == "http" and not self.allow_http:
            raise EgressRefused(f"{url}: webhooks go over https (webhooks.allow_http is for a local demo only)")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EgressRefused(f"{url}: not an http(s) URL with a host")
        try:
            literal = ipaddress.ip_address(parts.hostname.split("%")[0])
        except ValueError:
            return  # a name: checked by PinnedResolver when the connection is made
        self.check_address(parts.hostname, literal)


class PinnedResolver(AbstractResolver):
    """aiohttp's resolver for webhook deliveries: resolve, refuse unless every address is allowed, and hand the
    connector exactly those addresses (as numeric hosts, so nothing resolves them again)."""

    def __init__(self, policy: EgressPolicy, lookup: Lookup | None = None) -> None:
        self.policy = policy
        self.lookup = lookup

    async def _getaddrinfo(self, host: str, port: int, family: int) -> list[tuple[Any, ...]]:
        if self.lookup is not None:
            return await self.lookup(host, port, family)
        return await asyncio.get_running_loop().getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        try:
            infos = await self._getaddrinfo(host, port, family)
        except socket.gaierror as exc:
            raise OSError(f"{host} does not resolve: {exc.strerror}") from None
        results: list[ResolveResult] = []
        for fam, _, proto, _, sockaddr in infos:
            addr = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
            self.policy.check_address(host, addr)  # every answer, not just the first: no mixed answers
            results.append({"hostname": host, "host": str(addr), "port": port, "family": fam, "proto": proto,
                            "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV})
        if not results:
            raise OSError(f"{host} has no address")
        return results

    async def close(self) -> None:
        return None
