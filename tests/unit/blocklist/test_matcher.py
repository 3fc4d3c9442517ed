"""The in-memory blocklist: normal forms and their errors, lookups by prefix length, IPv4-mapped clients, expiry
checked on a hit, and the bounded memory of parsed client addresses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gatehouse.blocklist import matcher
from gatehouse.blocklist.matcher import Blocklist, normalise


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("203.0.113.7", "203.0.113.7/32"),
        (" 203.0.113.0/24 ", "203.0.113.0/24"),
        ("2001:DB8:0:0::1", "2001:db8::1/128"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("0.0.0.0/0", "0.0.0.0/0"),
    ],
)
def test_networks_take_their_normal_form(given: str, normal: str) -> None:
    assert normalise(given) == normal


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("203.0.113.7/24", "did you mean 203.0.113.0/24"),
        ("2001:db8::1/64", "did you mean 2001:db8::/64"),
        ("203.0.113.300", "not an IPv4 or IPv6 address"),
        ("example.com", "not an IPv4 or IPv6 address"),
        ("10.0.0.0/40", "not an IPv4 or IPv6 address"),
        ("", "not an IPv4 or IPv6 address"),
    ],
)
def test_bad_networks_are_named_with_the_fix(given: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        normalise(given)


def test_lookups_cover_every_prefix_length_and_both_versions() -> None:
    blocklist = Blocklist()
    assert blocklist.count == 0 and not blocklist.blocks("203.0.113.9")
    blocklist.replace(
        [("203.0.113.0/24", None), ("198.51.100.7/32", None), ("10.0.0.0/8", None), ("2001:db8::/48", None)]
    )
    assert blocklist.count == 4
    for host in ("203.0.113.0", "203.0.113.255", "198.51.100.7", "10.200.1.1", "2001:db8::1", "2001:db8:0:ffff::1"):
        assert blocklist.blocks(host), host
    for host in ("203.0.114.0", "198.51.100.8", "11.0.0.1", "2001:db8:1::1", "::1", "testclient", ""):
        assert not blocklist.blocks(host), host
    assert blocklist.blocks("::ffff:203.0.113.9")  # IPv4 on a dual-stack listener
    assert blocklist.blocks("::ffff:203.0.113.9")  # the second time from the parsed cache
    blocklist.replace([])
    assert blocklist.count == 0 and not blocklist.blocks("203.0.113.9")


def test_an_entry_stops_blocking_at_its_expiry_while_a_wider_one_holds() -> None:
    now = datetime.now(UTC)
    blocklist = Blocklist()
    blocklist.replace([("192.0.2.0/24", now - timedelta(seconds=1)), ("192.0.2.128/25", now + timedelta(hours=1))])
    assert not blocklist.blocks("192.0.2.1")  # only the expired /24 covers it
    assert blocklist.blocks("192.0.2.200")  # the /25 still runs
    blocklist.replace([("192.0.2.0/24", now - timedelta(seconds=1)), ("192.0.0.0/16", None)])
    assert blocklist.blocks("192.0.2.1")  # an expired narrow entry does not hide a wider one


def test_parsed_addresses_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(matcher, "PARSED_MAX", 8)
    blocklist = Blocklist()
    blocklist.replace([("2001:db8::/32", None)])
    for n in range(100):
        assert blocklist.blocks(f"2001:db8::{n:x}")
    assert len(blocklist._parsed) <= 8
