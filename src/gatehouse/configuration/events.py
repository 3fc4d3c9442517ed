"""The audit events of configuration reloads (docs/audit.md): setting NAMES only, never their values."""

from __future__ import annotations

from gatehouse.audit.events import Event


class ConfigReloadedEvent(Event):
    """A replica re-read its settings and GATEHOUSE_CONFIG and applied them: the settings that changed and took
    effect, and those that changed but need a restart (left as they were)."""

    action = "config.reloaded"
    target_type = "replica"
    target = "replica"
    feed_kind = "config.reloaded"
    replica: str
    reload_id: str
    changed: list[str]
    restart_needed: list[str]
    upstreams: list[str]  # the upstreams whose settings (URL, key, models...) changed, added or removed


class ConfigReloadFailedEvent(Event):
    """A replica could not reload: the error names the setting or the file and field; nothing was applied."""

    action = "config.reload_failed"
    target_type = "replica"
    target = "replica"
    feed_kind = "config.reload_failed"
    replica: str
    reload_id: str
    error: str
