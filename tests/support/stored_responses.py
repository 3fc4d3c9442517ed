"""Stored responses for tests: Response objects and input items shaped as OpenAI's, saved through the service."""

from __future__ import annotations

import itertools
from typing import Any

from tests.conftest import Harness

_serial = itertools.count(1)


def input_message(text: str) -> dict[str, Any]:
    """A user message as the Responses API lists it among input items (with its id)."""
    return {
        "id": f"msg_in{next(_serial):06d}",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": text}],
    }


def response_object(text: str, *, previous: str | None = None, model: str = "demo") -> dict[str, Any]:
    """A completed Response whose output is one assistant message saying `text`."""
    serial = next(_serial)
    return {
        "id": f"resp_{serial:048x}",
        "object": "response",
        "created_at": 1_765_000_000 + serial,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": model,
        "output": [
            {
                "id": f"msg_out{serial:06d}",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "previous_response_id": previous,
        "store": True,
        "temperature": 1.0,
        "top_p": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "metadata": {},
        "usage": {
            "input_tokens": 5,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 3,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 8,
        },
    }


async def store(
    harness: Harness,
    user_id: int,
    text: str,
    *,
    inputs: list[dict[str, Any]] | None = None,
    previous: str | None = None,
    key_id: int | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Save a response answering `text` (its input: one message asking for it, unless given) as the POST path
    does; the Response and its input items."""
    response = response_object(f"answer to {text}", previous=previous)
    items = inputs if inputs is not None else [input_message(text)]
    await harness.runtime.gateway.stored_responses.save(user_id, key_id, response, items, previous)
    return response, items
