"""The audit events of backups (docs/audit.md)."""

from __future__ import annotations

from gatehouse.audit.events import Event


class BackupRestoredEvent(Event):
    """The database was replaced by a backup (the event is written into the restored audit log, continuing its
    chain): when the backup was taken, at which revision, the safety backup taken first, and whether the restore
    was forced while Gatehouse served."""

    action = "backup.restored"
    target_type = "backup"
    target = "name"
    name: str
    taken_at: str
    revision: list[str]
    safety_backup: str | None
    forced: bool
