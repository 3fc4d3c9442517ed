"""`gatehouse secret generate`: a strong random value of the form each secret setting wants."""

from __future__ import annotations

import secrets
from enum import StrEnum

from gatehouse.auth.tokens import new_api_key


class SecretKind(StrEnum):
    JWT = "jwt"  # JWT_SECRET (and the value moved to JWT_SECRET_PREVIOUS at a rotation): 32+ characters
    TOKEN = "token"  # noqa: S105 (a kind, not a secret). JOB_TOKEN, METRICS_TOKEN, ALERT_WEBHOOK_SECRET: 16+ characters, sent in headers
    API_KEY = "api-key"  # BOOTSTRAP_ADMIN_API_KEY: shaped like every Gatehouse key (gh_...)
    BACKUP_KEY = "backup-key"  # BACKUP_KEY: a passphrase scrypt stretches into the AES-256 key


def generate(kind: SecretKind) -> str:
    """A fresh secret of `kind`, URL- and header-safe (no quoting needed in .env, YAML or a shell)."""
    if kind is SecretKind.JWT:
        return secrets.token_urlsafe(48)  # 384 bits, 64 characters
    if kind is SecretKind.TOKEN:
        return secrets.token_urlsafe(32)  # 256 bits, 43 characters
    if kind is SecretKind.API_KEY:
        return new_api_key()  # 256 bits
    return secrets.token_urlsafe(48)
