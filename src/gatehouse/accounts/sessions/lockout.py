"""Login lockout and backoff: failed logins counted per account and per client IP in the rate limiter.

The windows live where every other rate limit lives (memory for one replica, Redis for many), so a lockout
holds across replicas. Accounts are counted by a hash of the normalised email, never the email itself, and
unknown emails are counted exactly like known ones: a lockout says nothing about who has an account.
"""

from __future__ import annotations

import asyncio

from gatehouse.accounts.errors import LoginLocked
from gatehouse.auth.tokens import hash_token
from gatehouse.limits.ratelimit import RateLimiter, ip_identity

ACCOUNT_RULE = "login_failures_account"
IP_RULE = "login_failures_ip"
BACKOFF_AFTER = 3  # failures in the window before each further failure is answered late


def account_identity(email: str) -> str:
    """The rate-limit identity of a login email (normalised, hashed: no raw email in Redis keys)."""
    return "a" + email_hash(email)[:32]


def email_hash(email: str) -> str:
    """A stable, non-reversible name for an email, for rate-limit keys and audit details."""
    return hash_token(email.strip().lower())


async def ensure_not_locked(limiter: RateLimiter, *, email: str, ip: str) -> None:
    """Raise 429 `login_locked` (with Retry-After) when the account or the address has failed too often."""
    for rule, identity, whom in (
        (ACCOUNT_RULE, account_identity(email), "this account"),
        (IP_RULE, ip_identity(ip), "your address"),
    ):
        if not await limiter.allows(rule, identity):
            retry = await limiter.retry_in(rule, identity)
            raise LoginLocked(
                f"Too many failed logins for {whom}: try again in {retry} s, or ask an administrator.",
                headers={"retry-after": str(retry)},
            )


async def count_failure(limiter: RateLimiter, *, email: str, ip: str) -> int:
    """Count a failed login; returns the account's failures in the current window."""
    account = account_identity(email)
    await limiter.count(ACCOUNT_RULE, account)
    await limiter.count(IP_RULE, ip_identity(ip))
    return await limiter.used(ACCOUNT_RULE, account)


def backoff_seconds(failures: int, max_seconds: float) -> float:
    """The delay before answering a failed login: 0 up to BACKOFF_AFTER failures, then 1, 2, 4... s, bounded."""
    if failures < BACKOFF_AFTER or max_seconds <= 0:
        return 0.0
    return float(min(2 ** min(failures - BACKOFF_AFTER, 16), max_seconds))


async def back_off(failures: int, max_seconds: float) -> None:
    """Wait before answering a failed login, so online guessing slows down (no lock or connection is held)."""
    delay = backoff_seconds(failures, max_seconds)
    if delay > 0:
        await asyncio.sleep(delay)
