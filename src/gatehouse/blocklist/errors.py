"""Blocklist errors (docs/errors.md lists every code)."""

from __future__ import annotations

from gatehouse.errors import BadRequest, Conflict, NotFound

# What a blocked client is told (code `ip_blocked`, sent by core/middleware.py): no reason (that is for
# operators), and whom to ask.
BLOCKED_MESSAGE = (
    "Requests from your network address are blocked by this gateway. If you think this is a mistake, contact the "
    "gateway's administrator and quote the request id."
)


class InvalidNetwork(BadRequest):
    """A blocklist network is not an IPv4/IPv6 address or CIDR network, or has bits set after its prefix length."""

    code = "invalid_network"


class InvalidExpiry(BadRequest):
    """A blocklist entry's expiry is in the past, or both `expires_at` and `minutes` were given."""

    code = "invalid_expiry"


class BlocksCaller(Conflict):
    """The network contains the address the request came from: the caller would lock themselves out."""

    code = "blocks_caller"


class AlreadyBlocked(Conflict):
    """The same network is on the blocklist already."""

    code = "already_blocked"


class BlockNotFound(NotFound):
    """No blocklist entry with this id."""

    code = "block_not_found"
