"""Redaction for what leaves the machine in a support bundle: every configured secret's value, anything shaped
like a Gatehouse or provider key or a bearer token, passwords in URLs, and personal data masked as exports mask
it (exports/pii.py: emails, phone numbers, IP addresses)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote

import orjson
from pydantic import SecretStr

from gatehouse.exports.pii import mask_json, mask_text
from gatehouse.settings import Settings
from gatehouse.upstreams.config import load_config

REDACTED = "[redacted]"
MIN_SECRET_CHARS = 6  # a shorter configured value would be scrubbed out of every word it happens to be in
_PATTERNS = (
    # Gatehouse API keys (auth/tokens.py: gh_ + token_urlsafe), OpenAI/Anthropic-style keys (sk-..., sk-ant-...).
    re.compile(r"\bgh_[A-Za-z0-9_-]{6,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{12,}"),
    # Authorization values: `Bearer <token>` / `Basic <base64>`, as a header, a log field or prose.
    re.compile(r"(?i)\b(?:bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"),
)
# userinfo in a URL (`scheme://user:password@host`): the password goes, the user stays (it helps to debug).
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/?#@\s\"']*:)(?P<password>[^@/?#\s\"']+)(?=@)", re.I)


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret value the settings hold: each SecretStr, passwords inside URLs, the upstreams' API keys and
    header values from GATEHOUSE_CONFIG (or the variables it names)."""
    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, str):
            found.extend(url_passwords(value))
    with contextlib.suppress(Exception):  # a broken config file is the doctor's finding; its keys still go below
        for upstream in load_config(settings).upstreams:
            found.append(upstream.resolved_api_key())
            found.extend(upstream.headers.values())
            found.extend(url_passwords(upstream.base_url))
    return found


def url_passwords(text: str) -> list[str]:
    """The passwords of the URLs in `text`, as written and decoded."""
    found = []
    for match in _URL_PASSWORD.finditer(text):
        password = match.group("password")
        found += [password, unquote(password)]
    return found


def redact_url(url: str) -> str:
    """A URL with its password replaced (`postgresql://gatehouse:[redacted]@db/gatehouse`)."""
    return _URL_PASSWORD.sub(lambda m: m.group("head") + REDACTED, url)


class Scrubber:
    """Removes the given secret values and anything that looks like a key or token from text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values: set[str] = set()
        for secret in secrets:
            secret = secret.strip()
            if len(secret) >= MIN_SECRET_CHARS:
                # As written, and as it appears inside JSON (quotes and backslashes escaped) or a URL.
                values.update({secret, json.dumps(secret)[1:-1], quote(secret, safe="")})
        ordered = sorted(values, key=len, reverse=True)  # a longer secret containing a shorter one goes whole
        self._values = re.compile("|".join(re.escape(v) for v in ordered)) if ordered else None

    def text(self, text: str) -> str:
        """`text` without secret values, keys, tokens or URL passwords."""
        if self._values is not None:
            text = self._values.sub(REDACTED, text)
        for pattern in _PATTERNS:
            text = pattern.sub(REDACTED, text)
        return _URL_PASSWORD.sub(lambda m: m.group("head") + REDACTED, text)

    def value(self, value: Any) -> Any:
        """A decoded JSON value with every string in it scrubbed (keys too)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        return value

    def log_line(self, line: str) -> str:
        """A log line scrubbed, then masked as exports mask personal data (a JSON line field by field, keeping it
        JSON; any other line as free text)."""
        if line.startswith("{"):
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                entry = None
            if isinstance(entry, dict):
                return orjson.dumps(mask_json(self.value(entry))).decode()
        return mask_text(self.text(line))
