"""PII masking: emails, phone numbers and IP addresses, alone and inside free text; nothing else is touched."""

from __future__ import annotations

import orjson
import pytest

from gatehouse.ops.pii import mask_email, mask_ip, mask_json, mask_phone, mask_text


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("alice@example.com", "al***@example.com"),
        ("user.name+tag@mail.example.org", "us***@mail.example.org"),
        ("abc@example.com", "ab***@example.com"),
        ("jo@example.com", "j***@example.com"),
        ("a@example.com", "a***@example.com"),
    ],
)
def test_email_keeps_two_characters_and_the_domain(raw: str, masked: str) -> None:
    assert mask_email(raw) == masked


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("+1 (555) 123-4567", "+1 (55*) ***-**67"),
        ("0049 30 1234567", "004* ** *****67"),
        ("555-123-4567", "555-***-**67"),
        ("+44 20 7946 0958", "+44 2* **** **58"),
        ("0301234567", "030*****67"),
    ],
)
def test_phone_keeps_three_first_and_two_last_digits(raw: str, masked: str) -> None:
    assert mask_phone(raw) == masked


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("203.0.113.7", "203.0.113.x"),
        ("10.0.0.255", "10.0.0.x"),
        ("2001:db8:1:2::7", "2001:db8:1::/48"),
        ("2001:0db8:abcd:0012:0000:0000:0000:0001", "2001:db8:abcd::/48"),
        ("::1", "::/48"),
        ("fe80::1%eth0", "fe80::/48"),
        ("::ffff:198.51.100.23", "198.51.100.x"),
    ],
)
def test_ip_loses_its_last_octet_or_last_80_bits(raw: str, masked: str) -> None:
    assert mask_ip(raw) == masked


def test_free_text_masks_everything_found_and_nothing_else() -> None:
    text = (
        "Alice <alice@example.com>, call +1 (555) 123-4567 or 0049 30 1234567; seen from 203.0.113.7 and "
        "2001:db8:1:2::7 at 2026-11-01T10:00:00+00:00 (10:00:00, 01.11.2026); 1000000 tokens, key gh_1234567890ab, "
        "request 4f3a9c1234567890, version 1.2.3, mac aa:bb:cc:dd:ee:ff"
    )
    assert mask_text(text) == (
        "Alice <al***@example.com>, call +1 (55*) ***-**67 or 004* ** *****67; seen from 203.0.113.x and "
        "2001:db8:1::/48 at 2026-11-01T10:00:00+00:00 (10:00:00, 01.11.2026); 1000000 tokens, key gh_1234567890ab, "
        "request 4f3a9c1234567890, version 1.2.3, mac aa:bb:cc:dd:ee:ff"
    )


def test_masking_is_idempotent() -> None:
    text = "bob@example.com +1 (555) 123-4567 203.0.113.7 2001:db8:1:2::7 ::1 10.0.0.0/8 2001:db8::/32"
    once = mask_text(text)
    assert mask_text(once) == once
    assert "10.0.0.0/8" in once and "2001:db8::/32" in once  # networks no narrower than the mask stay


def test_json_masks_strings_and_keeps_numbers_and_keys() -> None:
    details = orjson.loads(
        '{"email": "bob@example.com", "ip": "203.0.113.9", "tokens_per_day": 5551234567, '
        '"notes": ["call 555-123-4567"], "until": "2026-11-01T10:00:00Z", "nested": {"by": "ann@example.org"}}'
    )
    assert mask_json(details) == {
        "email": "bo***@example.com",
        "ip": "203.0.113.x",
        "tokens_per_day": 5551234567,
        "notes": ["call 555-***-**67"],
        "until": "2026-11-01T10:00:00Z",
        "nested": {"by": "an***@example.org"},
    }


def test_values_that_are_not_what_the_column_says_are_masked_as_text() -> None:
    assert mask_ip("unknown") == "unknown"
    assert mask_email("not an email, but 555-123-4567") == "not an email, but 555-***-**67"
    assert mask_phone("12") == "**"
