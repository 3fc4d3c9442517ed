"""Argon2id password hashing, always off the event loop."""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
MIN_PASSWORD_LENGTH = 8
_dummy_hash: str | None = None


def _dummy() -> str:
    # A real hash: verifying against it when the email is unknown makes unknown and known emails take
    # the same time, so timing does not reveal who has an account. Made at startup (prepare_dummy_hash),
    # not at import; were it made on first use, the first unknown email would cost a hash more.
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
    return _dummy_hash


async def prepare_dummy_hash() -> None:
    """Build the hash unknown emails are checked against, in a worker thread (call once at startup)."""
    await asyncio.to_thread(_dummy)


async def hash_password(password: str) -> str:
    """Argon2id hash, computed in a worker thread."""
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    """Constant-work check; a missing hash still costs one verification."""
    try:
        target = password_hash
        if target is None:
            target = _dummy_hash if _dummy_hash is not None else await asyncio.to_thread(_dummy)
        ok = await asyncio.to_thread(_hasher.verify, target, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return bool(ok) and password_hash is not None


def check_password_strength(password: str) -> str | None:
    """A reason the password is unacceptable, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"password must be at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > 1024:
        return "password must be at most 1024 characters"
    return None
