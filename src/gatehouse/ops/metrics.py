"""Prometheus metrics, in prometheus-client's default registry."""

from __future__ import annotations

from prometheus_client import Counter

QUOTA_BLOCKS = Counter("quota_blocks_total", "Requests refused because a daily quota was used up", ["kind"])
RATE_LIMIT_HITS = Counter("rate_limit_hits_total", "Requests refused by a rate limit", ["action"])
