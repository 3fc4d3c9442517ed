"""Secrets handed to people (API keys, session tokens): generated, hashed, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

API_KEY_PREFIX = "gh_"
PREFIX_LENGTH = 10  # what lists show: "gh_" plus 7 characters, enough to tell keys apart


def new_api_key() -> str:
    """A fresh API key: 256 random bits."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def key_prefix(key: str) -> str:
    """The visible part of a key, shown in lists."""
    return key[:PREFIX_LENGTH]


def hash_token(token: str) -> str:
    """SHA-256 hex of a high-entropy token (keys, sessions): fast lookup, nothing reversible stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_session_token() -> str:
    """A session cookie value."""
    return secrets.token_urlsafe(32)


def csrf_token(secret: str, session_token: str) -> str:
    """The CSRF token bound to a session: an HMAC, so nothing extra is stored."""
    return hmac.new(secret.encode(), b"csrf:" + session_token.encode(), hashlib.sha256).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time string comparison."""
    return hmac.compare_digest(a.encode(), b.encode())
