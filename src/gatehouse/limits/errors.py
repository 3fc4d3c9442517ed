"""Limit errors: quotas and rate limits (docs/errors.md lists every code)."""

from __future__ import annotations

from gatehouse.errors import BadRequest, TooManyRequests


class QuotaExceeded(TooManyRequests):
    """A daily quota is used up (`param`: messages or tokens); Retry-After says when the quota day resets."""

    code = "quota_exceeded"


class RateLimited(TooManyRequests):
    """A rate limit was reached (`param`: the rule); Retry-After says when the window admits the next request."""

    code = "rate_limited"


class UnknownRateLimit(BadRequest):
    """A rate limit of that name does not exist (GET /admin/rate-limits lists them)."""

    code = "unknown_rate_limit"
