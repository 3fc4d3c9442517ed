"""BACKUP_KEY, the passphrase that encrypts backups (backups/crypto.py): read from the settings, or refused."""

from __future__ import annotations

from gatehouse.backups.errors import BackupKeyMissing, BackupKeyTooShort
from gatehouse.settings import MIN_TOKEN_LENGTH, Settings


def backup_key(settings: Settings) -> str:
    """BACKUP_KEY, or an error saying how to set it."""
    key = settings.backup_key.get_secret_value()
    if not key:
        raise BackupKeyMissing(
            f"BACKUP_KEY is not set: set it (or BACKUP_KEY_FILE) to {MIN_TOKEN_LENGTH}+ random characters, and keep a "
            "copy away from the backups: without it an encrypted backup cannot be read"
        )
    if len(key) < MIN_TOKEN_LENGTH:
        raise BackupKeyTooShort(f"BACKUP_KEY is {len(key)} characters: use at least {MIN_TOKEN_LENGTH}")
    return key
