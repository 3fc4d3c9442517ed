"""The support bundle's redaction: configured secrets in any spelling a log line may hold them, key- and token-shaped
strings, URL passwords, and personal data masked as exports mask it, with JSON lines kept JSON."""

from __future__ import annotations

import orjson

from gatehouse.diagnostics.scrub import REDACTED, Scrubber, redact_url, url_passwords

AWKWARD = 'pa"ss\\word/with spaces-123'  # quotes and backslashes are escaped in JSON, / and spaces in URLs


def test_a_secret_goes_whatever_its_spelling() -> None:
    scrub = Scrubber([AWKWARD, "short", "  padded-secret-value \n"])
    line = orjson.dumps({"event": "x", "detail": f"got {AWKWARD} and padded-secret-value"}).decode()
    assert AWKWARD in orjson.loads(line)["detail"] and AWKWARD not in line  # JSON escaped it
    scrubbed = scrub.log_line(line)
    assert orjson.loads(scrubbed) == {"event": "x", "detail": f"got {REDACTED} and {REDACTED}"}
    assert scrub.text("https://host/?p=pa%22ss%5Cword%2Fwith%20spaces-123") == f"https://host/?p={REDACTED}"
    assert scrub.text("a short word") == "a short word"  # values under six characters would match by chance


def test_shapes_of_keys_tokens_and_url_passwords() -> None:
    scrub = Scrubber([])
    text = (
        "key gh_AbC123-_xyz789 openai sk-proj-0123456789abcdef auth Bearer eyJhbGciOi.J9.x "
        "basic Basic dXNlcjpwYXNz and postgresql://app:s3cr%40t@db:5432/gatehouse"
    )
    assert scrub.text(text) == (
        f"key {REDACTED} openai {REDACTED} auth {REDACTED} basic {REDACTED} and postgresql://app:{REDACTED}@db:5432/gatehouse"
    )
    assert redact_url("redis://:hunter22@cache:6379/0") == f"redis://:{REDACTED}@cache:6379/0"
    assert redact_url("https://example.com/a@b") == "https://example.com/a@b"
    assert set(url_passwords("postgresql://app:s3cr%40t@db/x")) == {"s3cr%40t", "s3cr@t"}


def test_log_lines_are_masked_as_exports_mask_them() -> None:
    scrub = Scrubber([])
    line = orjson.dumps(
        {
            "event": "signup",
            "email": "alice.smith@example.com",
            "client_ip": "203.0.113.7",
            "user_id": 5,
            "email_hash": "ab",
        }
    ).decode()
    assert orjson.loads(scrub.log_line(line)) == {
        "event": "signup",
        "email": "al***@example.com",
        "client_ip": "203.0.113.x",
        "user_id": 5,
    }
    assert scrub.log_line("console line from bob@example.com at 2001:db8:1:2::7") == (
        "console line from bo***@example.com at 2001:db8:1::/48"
    )
