"""PII masking for exports: pure functions, applied by column kind (email, IP, free text).

The masked forms keep what an analyst needs (the domain, the country and area of a phone number, the
network of an address) and lose what names a person:

- email: the first two characters of the local part (one when it is shorter than three), then `***`:
  `alice@example.com` -> `al***@example.com`, `jo@example.com` -> `j***@example.com`.
- phone number: the first three and the last two digits; the digits between become `*`, separators stay:
  `+1 (555) 123-4567` -> `+1 (55*) ***-**67`.
- IPv4: the last octet becomes `x` (`203.0.113.7` -> `203.0.113.x`: plainly masked, never a valid address).
- IPv6: the first 48 bits, as a network (`2001:db8:1:2::7` -> `2001:db8:1::/48`); an IPv4-mapped IPv6
  address is masked as its IPv4 address.

Free text (names, reasons, user agents, audit details) is scanned for all three; dates and times in it are
left alone, and so are plain numbers that cannot be a phone number.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

MASK = "***"
IPV6_KEPT_BITS = 48
PHONE_MIN_DIGITS = 7
PHONE_MAX_DIGITS = 15
PHONE_BARE_MIN_DIGITS = 10  # a run of digits with no +, 0, bracket or separator is a phone number from here on

_EMAIL = r"(?P<email>(?<![\w.%+*-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)"
_IPV4 = r"(?P<ipv4>(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,2})?(?!\w|\.\d))"
# Candidates only: ipaddress decides (a time such as 10:00:00 or a MAC address is left alone).
_IPV6 = (
    r"(?P<ipv6>(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?"
    r"(?:%[\w.]+)?(?:/\d{1,3})?(?![\w:]))"
)
_DATE = (
    r"(?P<date>(?<![\w.])(?:\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
    r"|\d{1,2}[./]\d{1,2}[./]\d{4})(?!\w))"
)
# Digit groups joined by one separator (space, dot, hyphen) or bracketed; an optional leading +.
_PHONE = (
    r"(?P<phone>(?<![\w*+.\-])\+?(?:\(\d{1,5}\)|\d+)(?:[ .\-]?\(\d{1,5}\)|[ .\-]\d+|(?<=\))\d+)*"
    r"(?![\w*]|[.\-][\w*]))"
)
_SCAN = re.compile("|".join((_EMAIL, _IPV4, _IPV6, _DATE, _PHONE)))

EMAIL_PATTERN = re.compile(_EMAIL)
PHONE_DIGITS = re.compile(r"\d")


def mask_email(value: str) -> str:
    """`alice@example.com` -> `al***@example.com`; text without an @ is masked as free text."""
    local, at, domain = value.rpartition("@")
    if not at or not local:
        return mask_text(value)
    kept = local[:2] if len(local) >= 3 else local[:1]
    return f"{kept}{MASK}@{domain}"


def _phone_like(candidate: str) -> bool:
    digits = sum(c.isdigit() for c in candidate)
    if not PHONE_MIN_DIGITS <= digits <= PHONE_MAX_DIGITS:
        return False
    stripped = candidate.strip()
    marked = stripped.startswith(("+", "(", "0")) or any(c in stripped for c in " .-()")
    return marked or digits >= PHONE_BARE_MIN_DIGITS


def mask_phone(value: str) -> str:
    """Keep the first three and the last two digits; every digit between becomes `*` (separators stay)."""
    total = sum(c.isdigit() for c in value)
    if total <= 5:
        return "*" * len(value) if total else value
    out = []
    seen = 0
    for char in value:
        if char.isdigit():
            seen += 1
            out.append(char if seen <= 3 or seen > total - 2 else "*")
        else:
            out.append(char)
    return "".join(out)


def mask_ip(value: str) -> str:
    """An IPv4 address loses its last octet (`x`), an IPv6 address its last 80 bits (`.../48`)."""
    text = value.strip()
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return mask_text(value)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        return str(address).rsplit(".", 1)[0] + ".x"
    network = ipaddress.IPv6Network(f"{address}/{IPV6_KEPT_BITS}", strict=False)
    return str(network)


def _mask_address(found: str) -> str | None:
    """A masked address (or network) for an IP candidate, `found` itself when it reveals no more than the
    masked form would, None when it is no address at all."""
    address_text, slash, prefix = found.partition("/")
    try:
        address = ipaddress.ip_address(address_text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    kept = 24 if isinstance(address, ipaddress.IPv4Address) else IPV6_KEPT_BITS
    if slash and prefix.isdigit() and int(prefix) <= kept:
        return found  # already a network no narrower than what masking keeps (e.g. a masked address)
    return mask_ip(str(address))


def _replace(match: re.Match[str]) -> str:
    kind = match.lastgroup
    found = match.group(0)
    if kind == "email":
        return mask_email(found)
    if kind in ("ipv4", "ipv6"):
        masked = _mask_address(found)
        if masked is not None:
            return masked
        return mask_phone(found) if kind == "ipv4" and _phone_like(found) else found
    if kind == "phone" and _phone_like(found):
        return mask_phone(found)
    return found


def mask_text(value: str) -> str:
    """Free text with every email, phone number and IP address in it masked."""
    return _SCAN.sub(_replace, value)


def mask_json(value: Any) -> Any:
    """A decoded JSON value with every string in it masked as free text (numbers and keys stay)."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, list):
        return [mask_json(v) for v in value]
    if isinstance(value, dict):
        return {k: mask_json(v) for k, v in value.items()}
    return value
