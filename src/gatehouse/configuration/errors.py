"""Configuration errors (docs/errors.md lists every code)."""

from __future__ import annotations

from gatehouse.errors import ValidationFailed


class ReloadFailed(ValidationFailed):
    """A reload found the new settings or GATEHOUSE_CONFIG invalid: nothing was applied on this replica; the message
    names what to fix and the reload's id (its config.reload_failed audit event)."""

    code = "reload_failed"
