"""PII masking: emails, phone numbers and IP addresses, alone and inside free text; nothing else is touched."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import orjson
import pytest

from gatehouse.auth.models import User
from gatehouse.exports.entities import Field
from gatehouse.exports.files import Formatter
from gatehouse.exports.pii import mask_display_name, mask_email, mask_ip, mask_json, mask_phone, mask_text


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


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        # A network is kept only when it is one (no host bits) and no narrower than what masking keeps.
        ("net 10.0.0.1/24", "net 10.0.0.x"),
        ("net 1.2.3.4/16", "net 1.2.3.x"),
        ("net 10.0.0.0/25", "net 10.0.0.x"),
        ("net 2001:db8:abcd:12::1/48", "net 2001:db8:abcd::/48"),
        ("net 2001:db8:abcd:12::/64", "net 2001:db8:abcd::/48"),
        ("net 10.0.0.0/24 and 2001:db8::/48", "net 10.0.0.0/24 and 2001:db8::/48"),
        # Emails after `*`, with non-ASCII characters, without a dot in the domain.
        ("**bob@example.com**", "**bo***@example.com**"),
        ("from bøb@example.com", "from bø***@example.com"),
        ("to bob@bücher.de.", "to bo***@bücher.de."),
        ("bootstrap admin@localhost", "bootstrap ad***@localhost"),
        ("https://alice@host.example/x", "https://al***@host.example/x"),
        # Phone numbers with no-break spaces, dashes, slashes, an extension.
        ("call +1\u00a0555\u00a0123\u00a04567", "call +1\u00a055*\u00a0***\u00a0**67"),
        ("call +49\u202f30\u202f1234567", "call +49\u202f3*\u202f*****67"),
        ("call 555\u2013123\u20134567 now", "call 555\u2013***\u2013**67 now"),
        ("call 555\u2014123\u20144567", "call 555\u2014***\u2014**67"),
        ("call 030/12345678", "call 030/******78"),
        ("call 555/123-4567", "call 555/***-**67"),
        ("call 555-123-4567x12", "call 555-***-**67x12"),
        ("call 555-123-4567 ext. 12", "call 555-***-**67 ext. 12"),
        # IPv4 after `_` or a letter, IPv6 followed by a colon.
        ("ip_203.0.113.7", "ip_203.0.113.x"),
        ("host203.0.113.7", "host203.0.113.x"),
        ("ip_2001:db8:1:2::7", "ip_2001:db8:1::/48"),
        ("2001:db8::1: refused", "2001:db8::/48: refused"),
        ("2001:db8::1/64: refused", "2001:db8::/48: refused"),
        ("connect 2001:db8::1:refused", "connect 2001:db8::/48:refused"),
        # Two numbers in a row, a number next to an address, a card number: each masked.
        ("555-123-4567 555-987-6543", "555-***-**67 555-***-**43"),
        ("+1 (555) 123-4567 203.0.113.7", "+1 (55*) ***-**67 203.0.113.x"),
        ("call 555-123-4567 2001:db8::7", "call 555-***-**67 2001:db8::/48"),
        ("card 1234 5678 9012 3456", "card 123* **** **** **56"),
    ],
)
def test_free_text_formats_found_in_review(raw: str, masked: str) -> None:
    assert mask_text(raw) == masked
    assert mask_text(masked) == masked


@pytest.mark.parametrize(
    "text",
    [
        "2026/11/01 and 01/11/2026 and 2026-11-01T10:00:00Z",
        "std::vector, aa:bb:cc:dd:ee:ff, 10:00:00, at 10:00:00: done",
        "version 1.2.3, 1920x1080, key gh_1234567890ab, request 4f3a9c1234567890",
    ],
)
def test_what_is_no_pii_stays(text: str) -> None:
    assert mask_text(text) == text


@pytest.mark.parametrize(
    ("name", "email", "masked"),
    [
        ("alice.smith", "alice.smith@example.com", "al***"),  # the default: the local part
        ("Alice.Smith", "alice.smith@example.com", "Al***"),
        ("Alice Smith (alice.smith)", "alice.smith@example.com", "Alice Smith (al***)"),
        ("Bob", "bob@example.com", "Bo***"),
        ("Jo", "jo@example.com", "J***"),
        ("Jo Smith", "jo@example.com", "Jo Smith"),  # a local part this short is masked only as the whole name
        ("Alice Smith", "asmith@example.com", "Alice Smith"),
        ("Alice +1 (555) 123-4567", "alice@example.com", "Al*** +1 (55*) ***-**67"),
        ("", "alice@example.com", ""),
        ("alice", None, "alice"),
    ],
)
def test_display_name_loses_the_local_part_of_the_email_beside_it(name: str, email: str | None, masked: str) -> None:
    assert mask_display_name(name, email) == masked


def test_json_leaves_out_hashes_and_masks_display_names() -> None:
    details = {
        "email_hash": "0123456789abcdef",
        "reason": "bad_credentials",
        "nested": [{"last_purged_hash": "ab" * 32, "hash": "cd", "keep": "x"}],
        "changes": {"display_name": {"before": "alice.smith", "after": "Alice"}},
    }
    assert mask_json(details) == {
        "reason": "bad_credentials",
        "nested": [{"keep": "x"}],
        "changes": {"display_name": {"before": "al***", "after": "Al***"}},
    }


def test_csv_cells_that_a_spreadsheet_would_run_start_with_a_quote() -> None:
    fields = (
        Field("id", User.id),
        Field("display_name", User.display_name, "text"),
        Field("role", User.role),
        Field("messages_per_day", User.messages_per_day),
        Field("created_at", User.created_at, "time"),
    )
    when = datetime(2026, 11, 1, tzinfo=UTC)
    batch = [
        (1, '=HYPERLINK("http://x")', "@SUM(A1)", -5, when),
        (2, "+1 555 123 4567", "-2+3", 0, when),
        (3, "\tTAB", "\rCR", None, None),
        (4, "plain = fine", "user", 7, when),
        (5, "Bob\r=HYPERLINK(1)", "a\nb", 1, when),  # quoted: no new row starts at the formula
    ]
    for pii_mode in ("masked", "raw"):
        rows = list(csv.reader(io.StringIO(Formatter(fields, pii_mode, "csv").rows(batch).decode(), newline="")))
        assert [r[1:4] for r in rows] == [
            ['\'=HYPERLINK("http://x")', "'@SUM(A1)", "-5"],
            ["'+1 555 123 4567" if pii_mode == "raw" else "'+1 55* *** **67", "'-2+3", "0"],
            ["'\tTAB", "'\rCR", ""],
            ["plain = fine", "user", "7"],
            ["Bob\r=HYPERLINK(1)", "a\nb", "1"],
        ]
    # JSON lines hold the values as they are: no spreadsheet reads them.
    lines = Formatter(fields, "raw", "jsonl").rows(batch).decode().splitlines()
    first = orjson.loads(lines[0])
    assert first["display_name"] == '=HYPERLINK("http://x")' and first["messages_per_day"] == -5
