"""Backup errors (docs/errors.md lists every code)."""

from __future__ import annotations

from gatehouse.errors import BadRequest, Conflict, GatehouseError, NotFound, Unavailable


class BackupKeyMissing(BadRequest):
    """BACKUP_KEY is not set: set it (or BACKUP_KEY_FILE), and keep a copy away from the backups."""

    code = "backup_key_missing"


class BackupKeyTooShort(BadRequest):
    """BACKUP_KEY is shorter than the minimum (16 characters): use a longer random one."""

    code = "backup_key_too_short"


class BackupNameInvalid(BadRequest):
    """Not a backup name (letters, digits, `.`, `_`, `-`): `gatehouse backup list` shows the names."""

    code = "backup_name"


class BackupNotFound(NotFound):
    """No backup of this name in BACKUP_DIR: `gatehouse backup list` shows the backups there."""

    code = "backup_not_found"


class BackupManifestInvalid(BadRequest):
    """The backup's manifest (`<name>.json`) cannot be read: it was edited or damaged; use another backup."""

    code = "backup_manifest_invalid"


class BackupWrongDatabase(BadRequest):
    """The backup is of the other kind of database than DATABASE_URL: use a database of the backup's kind."""

    code = "backup_wrong_database"


class BackupNotEncrypted(BadRequest):
    """Only an encrypted backup is decrypted: use the plain backup's file as it is."""

    code = "backup_not_encrypted"


class OutputExists(Conflict):
    """The output file exists already: name a new file (nothing is overwritten)."""

    code = "output_exists"


class BackupUnusable(BadRequest):
    """The backup's file is missing, damaged, cut short or needs another key; nothing changed: use another backup."""

    code = "backup_unusable"


class BackupRevisionUnknown(BadRequest):
    """The backup is at a migration this Gatehouse does not know: restore it with the version that took it, or newer."""

    code = "backup_revision_unknown"


class DatabaseInUse(Conflict):
    """A restore while Gatehouse serves the database: stop the servers first, or pass --force."""

    code = "database_in_use"


class BackupToolMissing(Unavailable):
    """pg_dump, pg_restore or psql is not in PATH: install the PostgreSQL client tools (server's version or newer)."""

    code = "backup_tool_missing"


class BackupVerifyNeedsCreatedb(GatehouseError):
    """Verifying a PostgreSQL backup needs a scratch database: give Gatehouse's role CREATEDB, or verify elsewhere."""

    code = "backup_verify_needs_createdb"


class BackupToolFailed(GatehouseError):
    """pg_dump, pg_restore or psql failed; the message carries the end of what it printed."""

    code = "backup_tool_failed"


class BackupSqliteFailed(GatehouseError):
    """SQLite refused (locked for too long, disk full, not a database): its message, in one line."""

    code = "backup_sqlite_failed"
