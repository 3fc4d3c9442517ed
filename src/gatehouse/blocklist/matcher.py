"""The blocklist as the request path reads it: in memory, on every replica, rebuilt whole on each reload.

Entries are grouped by IP version and prefix length; each group is a dict from the network's address shifted right
by its host bits to the entry's expiry. So a lookup costs one dict probe per distinct prefix length in use (at most
33 for IPv4, 129 for IPv6; a few in practice), whatever the number of entries, plus parsing the client's address
the first time it is seen (parsed addresses are kept, up to PARSED_MAX: clients come back). An empty list costs the
middleware one attribute read (`count`); bench/blocklist.py measures the rest. Expiry is checked on a hit, so an
entry stops blocking at its `expires_at` to the second, without waiting for the next reload.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from datetime import datetime
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

NEVER = math.inf
PARSED_MAX = 16_384  # client addresses kept parsed (a few MB at most); all forgotten at once beyond that
Groups = tuple[tuple[int, dict[int, float]], ...]  # (host bits, {network >> host bits: expiry as a UNIX time})


def normalise(value: str) -> str:
    """A network or a single address (IPv4 or IPv6) in its normal form (`203.0.113.0/24`; an address becomes a /32
    or /128); ValueError naming what is wrong, and the network meant when bits are set after the prefix length."""
    text = value.strip()
    try:
        network = ip_network(text)
    except ValueError as exc:
        try:
            loose = ip_network(text, strict=False)
        except ValueError:
            raise ValueError(
                f"{text!r} is not an IPv4 or IPv6 address or CIDR network (e.g. 203.0.113.7, 203.0.113.0/24, "
                "2001:db8::/32)"
            ) from exc
        raise ValueError(
            f"{text!r} has bits set after its prefix length /{loose.prefixlen}: did you mean {loose}? (or "
            f"{text.split('/')[0]} alone, for that one address)"
        ) from exc
    return str(network)


def client_address(host: str) -> IPv4Address | IPv6Address | None:
    """The client's address as an object (an IPv4-mapped IPv6 address as the IPv4 one it is); None when the server
    reports no IP (a Unix socket, a test client's name)."""
    try:
        address = ip_address(host)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _group(entries: Iterable[tuple[str, datetime | None]], version: int) -> Groups:
    by_bits: dict[int, dict[int, float]] = {}
    for text, expires_at in entries:
        network = ip_network(text)
        if network.version != version:
            continue
        bits = network.max_prefixlen - network.prefixlen
        expiry = expires_at.timestamp() if expires_at is not None else NEVER
        table = by_bits.setdefault(bits, {})
        key = int(network.network_address) >> bits
        table[key] = max(table.get(key, -NEVER), expiry)
    # Widest networks first: one entry for a whole /16 decides before its many /32s are probed.
    return tuple(sorted(by_bits.items(), reverse=True))


class Blocklist:
    """The networks refused, as the middleware asks for them (see the module docstring)."""

    def __init__(self) -> None:
        self.count = 0  # entries loaded (expired ones included until the next reload): 0 skips every check
        self._v4: Groups = ()
        self._v6: Groups = ()
        self._parsed: dict[str, tuple[int, int] | None] = {}  # host -> (IP version, address as an int); None: no IP

    def replace(self, entries: Iterable[tuple[str, datetime | None]]) -> None:
        """Swap in a new list: (normalised network, expiry or None) pairs."""
        listed = list(entries)
        v4, v6 = _group(listed, 4), _group(listed, 6)
        # Assigned together, after both are built: a request in between sees the old list or the new one.
        self._v4, self._v6, self.count = v4, v6, len(listed)

    def blocks(self, host: str) -> bool:
        """Whether a request from `host` (the client address as the server resolved it) is refused now."""
        try:
            parsed = self._parsed[host]
        except KeyError:
            address = client_address(host)
            parsed = (address.version, int(address)) if address is not None else None
            if len(self._parsed) >= PARSED_MAX:
                self._parsed.clear()
            self._parsed[host] = parsed
        if parsed is None:
            return False
        version, value = parsed
        for bits, table in self._v4 if version == 4 else self._v6:
            expiry = table.get(value >> bits)
            if expiry is not None and (expiry == NEVER or expiry > time.time()):
                return True
        return False
