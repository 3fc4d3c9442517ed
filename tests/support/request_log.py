"""Request-log rows for tests, as the gateway queues them."""

from __future__ import annotations

from typing import Any


def log_row(**overrides: Any) -> dict[str, Any]:
    """A request-log row as the gateway queues one."""
    row: dict[str, Any] = {
        "request_id": "r1",
        "user_id": None,
        "key_id": None,
        "endpoint": "chat",
        "protocol": "openai",
        "model": "demo",
        "upstream": "demo",
        "stream": False,
        "status_code": 200,
        "error_code": None,
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "usage_reported": True,
        "latency_ms": 1.0,
        "ttft_ms": None,
    }
    row.update(overrides)
    return row
