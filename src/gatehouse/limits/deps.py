"""Rate limits as route declarations: `dependencies=[rate_limited("key_create")]` counts the request against the
rule before the route runs (a 429 when over); `Annotated[Limit, limit("export")]` hands the route a counter for a
rule that counts only requests found valid (the service calls it when it knows)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, Request

from gatehouse.auth.access import resolve_principal
from gatehouse.auth.actor import client_ip
from gatehouse.core.components import components_of
from gatehouse.limits.ratelimit import RULES, RateLimiter, ip_identity, user_identity

Limit = Callable[[], Awaitable[None]]  # counts one request against a rule; raises 429 when over


async def _identity(request: Request, per: str) -> str:
    if per == "ip":
        return ip_identity(client_ip(request))
    return user_identity((await resolve_principal(request)).user_id)


def _counter(rule: str) -> Callable[[Request], Awaitable[Limit]]:
    spec = RULES[rule]  # an unknown rule fails at import, not at the first request
    if spec.per not in ("ip", "user"):
        raise ValueError(f"rule {rule} counts per {spec.per}: a route cannot declare it (lockout.py counts it)")

    async def counter(request: Request) -> Limit:
        limiter = components_of(request).get(RateLimiter)
        identity = await _identity(request, spec.per)

        async def count() -> None:
            await limiter.hit(rule, identity)

        return count

    counter.__name__ = f"rate_limit_{rule}"
    return counter


def rate_limited(rule: str) -> Any:
    """`dependencies=[rate_limited("login")]`: the request counts against `rule` before the route runs."""
    counter = _counter(rule)

    async def check(request: Request) -> None:
        await (await counter(request))()

    check.__name__ = f"rate_limited_{rule}"
    return Depends(check)


def limit(rule: str) -> Any:
    """`Annotated[Limit, limit("export")]`: the route gets a counter for `rule`, to call once the request is valid."""
    return Depends(_counter(rule))
