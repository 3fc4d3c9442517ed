"""Limit errors: quotas and rate limits (docs/errors.md lists every code)."""

from __future__ import annotations

from gatehouse.errors import BadRequest, TooManyRequests, Unavailable


class QuotaExceeded(TooManyRequests):
    """A daily quota is used up (`param`: messages or tokens); Retry-After says when the quota day resets."""

    code = "quota_exceeded"


class QuotaBusy(TooManyRequests):
    """A request did not fit only because the caller's other requests in progress hold the rest of the quota, and
    they did not finish within QUOTA_WAIT_SECONDS; Retry-After is seconds, not the end of the quota day."""

    code = "quota_busy"


class RateLimited(TooManyRequests):
    """A rate limit was reached (`param`: the rule); Retry-After says when the window admits the next request."""

    code = "rate_limited"


class RateLimiterUnavailable(Unavailable):
    """Redis, where the rate-limit windows live, does not answer and RATE_LIMIT_REDIS_FALLBACK=refuse: nothing that
    a rate limit applies to is admitted until it answers again; retry after Retry-After."""

    code = "rate_limiter_unavailable"


class UnknownRateLimit(BadRequest):
    """A rate limit of that name does not exist (GET /admin/rate-limits lists them)."""

    code = "unknown_rate_limit"
