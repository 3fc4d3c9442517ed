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
left alone, and so are plain numbers that cannot be a phone number. A network (`10.0.0.0/8`) stays when it is
no narrower than what masking keeps; an address with a prefix (`10.0.0.1/24`) is masked as its address.
Digit groups too long for one phone number (two numbers in a row, a card number) are masked as one.

A user's display name beside their email also loses the email's local part (`mask_display_name`): it
defaults to it. In JSON (audit details), `*_hash` values are left out and `display_name` values masked.
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
RUN_MAX_DIGITS = 19  # digit groups up to this many are masked as one (a card number), longer ones split up
LOCAL_PART_MIN_SEARCHED = 3  # a shorter local part is masked in a name only when it is the whole name
NAME_KEYS = frozenset({"display_name"})  # in JSON (audit details): a name, which may be an email's local part

# Unicode-aware (`bøb@example.com`, `bob@bücher.de`) and with or without a dot in the domain (`admin@localhost`):
# `user@host` inside a URL is masked too, which is fine: better to mask too much than to let an address out.
_EMAIL = r"(?P<email>(?<![\w.%+-])[\w.%+-]+@[\w-]+(?:\.[\w-]+)*)"
# After a letter or `_` too (`ip_203.0.113.7`), never inside a longer dotted number.
_IPV4 = r"(?P<ipv4>(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,2})?(?!\d|\.\d))"
# Candidates only: ipaddress decides (a time such as 10:00:00 or a MAC address is left alone). After a letter
# or `_` too (`ip_2001:db8::1`); a colon right after one (`2001:db8::1: refused`, `...::1:refused`) is taken
# in, and given back in _replace; followed by a colon after a prefix (`2001:db8::/48: refused`); never cut
# short of its prefix.
_IPV6 = (
    r"(?P<ipv6>(?<![0-9A-Fa-f:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?"
    r"(?:%[\w.]+)?(?:/\d{1,3})?(?!/\d)"
    r"(?:(?![\w:])|(?<=[0-9A-Fa-f]:)(?![0-9A-Fa-f:])|(?<=\d)(?=:(?![0-9A-Fa-f:]))))"
)
_DATE = (
    r"(?P<date>(?<![\w.])(?:\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
    r"|\d{1,2}[./]\d{1,2}[./]\d{4}|\d{4}/\d{1,2}/\d{1,2})(?!\w))"
)
# What separates the digit groups of a phone number: space, no-break and thin spaces, dot, slash, hyphens and
# dashes (en, em, minus); _JOINERS are those that cannot end a number (`555-123-abc` is none).
_SPACES = " \u00a0\u2007\u2009\u202f"
_JOINERS = ".\\-/\u2010\u2011\u2012\u2013\u2014\u2212"
_SEP = f"[{_SPACES}{_JOINERS}]"
SEPARATORS = frozenset(_SPACES + "./-\u2010\u2011\u2012\u2013\u2014\u2212()")
# An extension (`x12`, ` ext. 12`) stays: only the number before it is masked.
_EXTENSION = r"[ \u00a0]*(?i:x|ext\.?|extn\.?|extension)[ \u00a0]*\d{1,6}"
# Digit groups joined by one separator or bracketed; an optional leading +, an optional extension; never the
# start of an IPv6 address (`555-123-4567 2001:db8::7`).
_PHONE = (
    rf"(?P<phone>(?<![\w*+.\-])\+?(?:\(\d{{1,5}}\)|\d+)(?:{_SEP}?\(\d{{1,5}}\)|{_SEP}\d+|(?<=\))\d+)*"
    rf"(?:{_EXTENSION})?(?![\w*]|[{_JOINERS}][\w*]|:[0-9A-Fa-f:]))"
)
_SCAN = re.compile("|".join((_EMAIL, _IPV4, _IPV6, _DATE, _PHONE)))
_EXTENSION_AT_END = re.compile(f"{_EXTENSION}$")
_SPACE_RUN = re.compile(f"([{_SPACES}]+)")
# ASCII letters, digits and `_` only, not all digits: no email (no @), no address (no . or :), and no phone
# number (inside the word it would follow a letter or digit; at its start it runs into a letter).
_ONE_WORD = re.compile(r"[A-Za-z0-9_]*[A-Za-z_][A-Za-z0-9_]*")

EMAIL_PATTERN = re.compile(_EMAIL)
PHONE_DIGITS = re.compile(r"\d")


def mask_email(value: str) -> str:
    """`alice@example.com` -> `al***@example.com`; text without an @ is masked as free text."""
    local, at, domain = value.rpartition("@")
    if not at or not local:
        return mask_text(value)
    return f"{_mask_local(local)}@{domain}"


def _phone_like(candidate: str) -> bool:
    digits = sum(c.isdigit() for c in candidate)
    if not PHONE_MIN_DIGITS <= digits <= PHONE_MAX_DIGITS:
        return False
    stripped = candidate.strip()
    marked = stripped.startswith(("+", "(", "0")) or any(c in SEPARATORS for c in stripped)
    return marked or digits >= PHONE_BARE_MIN_DIGITS


def _digits(text: str) -> int:
    return sum(c.isdigit() for c in text)


def _mask_number(text: str) -> str:
    """Digit groups masked as a phone number when they can be one, or when they are too many for one
    (a card number, numbers written without spaces between them); otherwise as they are."""
    if _phone_like(text) or (_digits(text) > PHONE_MAX_DIGITS and any(c in SEPARATORS for c in text.strip())):
        return mask_phone(text)
    return text


def _mask_words(words: list[str]) -> str:
    """Space-separated digit groups that are more than one number (more digits than a card number has, or an
    IPv4 address among them: `555-123-4567 555-987-6543`, `+1 (555) 123-4567 203.0.113.7`): an address is
    masked as one, and the groups between are taken into the longest runs that can be one phone number, each
    masked as one."""
    out: list[str] = []
    i = 0
    count = len(words) // 2 + 1  # words at even indexes, the spaces between them at odd ones
    while i < count:
        word = words[2 * i]
        address = _mask_address(word)
        if address is not None:
            out.append(address)
        else:
            j, digits = i, _digits(word)
            while j + 1 < count:
                following = words[2 * (j + 1)]
                if _mask_address(following) is not None or digits + _digits(following) > PHONE_MAX_DIGITS:
                    break
                j, digits = j + 1, digits + _digits(following)
            out.append(_mask_number("".join(words[2 * i : 2 * j + 1])))
            i = j
        if i + 1 < count:
            out.append(words[2 * i + 1])
        i += 1
    return "".join(out)


def _mask_phone_candidate(found: str) -> str:
    """A phone-number candidate from free text, masked when it is one or more (an extension stays as it is)."""
    extension = _EXTENSION_AT_END.search(found)
    number, rest = (found[: extension.start()], extension.group(0)) if extension else (found, "")
    words = _SPACE_RUN.split(number)
    if len(words) > 1 and (_digits(number) > RUN_MAX_DIGITS or any(_mask_address(w) is not None for w in words[0::2])):
        masked = _mask_words(words)
    else:
        masked = _mask_number(number)
    return masked + rest if masked != number else found


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


def _kept_bits(version: int) -> int:
    return 24 if version == 4 else IPV6_KEPT_BITS


def _mask_address(found: str) -> str | None:
    """A masked address (or network) for an IP candidate, `found` itself when it reveals no more than the
    masked form would, None when it is no address at all."""
    address_text, slash, prefix = found.partition("/")
    try:
        address = ipaddress.ip_address(address_text.split("%", 1)[0])
    except ValueError:
        return None
    if slash:
        # A network is kept as written only when it is one (no host bits: `10.0.0.0/8`, not `10.0.0.1/24`)
        # and no narrower than what masking keeps; anything else names a host, and is masked as its address.
        try:
            network = ipaddress.ip_network(f"{address_text.split('%', 1)[0]}/{prefix}", strict=True)
        except ValueError:
            network = None
        if network is not None and network.prefixlen <= _kept_bits(network.version):
            return found
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return mask_ip(str(address))


def _replace(match: re.Match[str]) -> str:
    kind = match.lastgroup
    found = match.group(0)
    if kind == "email":
        return mask_email(found)
    if kind in ("ipv4", "ipv6"):
        masked = _mask_address(found)
        if masked is None and kind == "ipv6" and found.endswith(":") and not found.endswith("::"):
            # `2001:db8::1: refused`: the colon after the address is not part of it.
            masked = _mask_address(found[:-1])
            if masked is not None:
                return masked + ":"
        if masked is not None:
            return masked
        return _mask_phone_candidate(found) if kind == "ipv4" else found
    if kind == "phone":
        return _mask_phone_candidate(found)
    return found


def mask_text(value: str) -> str:
    """Free text with every email, phone number and IP address in it masked."""
    if _ONE_WORD.fullmatch(value):
        return value  # a request id, a model name: nothing in it can match, and the scan costs a few µs
    return _SCAN.sub(_replace, value)


def _mask_local(text: str) -> str:
    """The masked form of an email's local part: `alice.smith` -> `al***`, `jo` -> `j***`."""
    return f"{text[:2] if len(text) >= 3 else text[:1]}{MASK}" if text else text


def mask_name(value: str) -> str:
    """A name with nothing to compare it to, masked like an email's local part (`alice.smith` -> `al***`)."""
    return _mask_local(value)


def mask_display_name(name: str, email: str | None) -> str:
    """A user's name, shown beside their masked email: masked as free text, and wherever it holds the email's
    local part (case-insensitively; the whole name when the local part is shorter than three characters) that
    part is masked like it is in the email: `alice.smith` beside `alice.smith@example.com` -> `al***`, so the
    name cannot give back what the email hides (a display name defaults to the local part)."""
    masked = mask_text(name)
    local = email.rpartition("@")[0] if email else ""
    if not local:
        return masked
    if masked.casefold() == local.casefold():
        return _mask_local(masked)
    if len(local) < LOCAL_PART_MIN_SEARCHED:
        return masked
    return re.sub(re.escape(local), lambda m: _mask_local(m.group(0)), masked, flags=re.IGNORECASE)


def is_hash_key(key: str) -> bool:
    """`email_hash`, `prev_hash`: a hash of something (an email, a row) that anyone can test guesses against."""
    return key.lower().endswith("_hash") or key.lower() == "hash"


def mask_json(value: Any) -> Any:
    """A decoded JSON value with every string in it masked as free text (numbers and keys stay), the values
    of `*_hash` keys left out (a fast hash of an email gives it back to whoever guesses it), and the strings
    under a `display_name` key masked as names (`mask_name`: it may be an email's local part)."""
    return _mask_json(value, name=False)


def _mask_json(value: Any, *, name: bool) -> Any:
    if isinstance(value, str):
        return mask_name(value) if name else mask_text(value)
    if isinstance(value, list):
        return [_mask_json(v, name=name) for v in value]
    if isinstance(value, dict):
        return {
            k: _mask_json(v, name=name or k in NAME_KEYS)
            for k, v in value.items()
            if not (isinstance(k, str) and is_hash_key(k))
        }
    return value
