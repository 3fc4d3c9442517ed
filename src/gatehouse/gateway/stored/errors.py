"""Stored-response errors (docs/errors.md)."""

from __future__ import annotations

from gatehouse.errors import NotFound


class ResponseNotFound(NotFound):
    """No stored response with this id for this user: never stored (`store: false`), deleted, past
    RESPONSES_RETENTION_DAYS, or another user's (which is not told apart, so that ids leak nothing)."""

    code = "response_not_found"
