"""What a backup's manifest file (backups/manifest.py) must hold, field by field, and, when it does not, what
is wrong, in words that follow "its manifest NAME.json": "is not valid JSON (...)", "lacks size"...
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

KINDS = ("regular", "safety")
DATABASES = ("sqlite", "postgresql")
MANIFEST_FORMAT = 1
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """A manifest file's content is not a manifest; the message says what is wrong ("is not valid JSON (...)")."""


def read_fields(text: str) -> dict[str, Any]:
    """The fields of a manifest file's content, each of its type; ManifestError when it is not a manifest."""
    if not text.strip():
        raise ManifestError("is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
        raise ManifestError(f"is not valid JSON ({where}): it was cut short or edited") from None
    except RecursionError:
        raise ManifestError("is not a manifest: it is nested too deeply") from None
    if not isinstance(data, dict):
        raise ManifestError(f"is not a JSON object but {type(data).__name__}")
    if "format" not in data:
        raise ManifestError("lacks format: it is not a Gatehouse backup manifest")
    if data["format"] != MANIFEST_FORMAT:
        raise ManifestError(
            f"has the format {_shown(data['format'])}, which this Gatehouse does not read "
            f"(it reads format {MANIFEST_FORMAT})"
        )
    missing = [name for name in _FIELDS if name not in data]
    if missing:
        raise ManifestError(f"lacks {', '.join(missing)}")
    values: dict[str, Any] = {}
    for name, (parse, expected) in _FIELDS.items():
        try:
            values[name] = parse(data[name])
        except (ValueError, TypeError, AttributeError):
            raise ManifestError(f"has {_shown(data[name])} as its {name}, where {expected} belongs") from None
    return values


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _one_of(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in allowed:
            raise ValueError(value)
        return str(value)

    return parse


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(value)
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(value)
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(value)
    return float(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(value)
    return value


def _sha256(value: Any) -> str:
    if not isinstance(value, str) or not SHA256_RE.match(value):
        raise ValueError(value)
    return value


def _utc_time(value: Any) -> datetime:
    when = datetime.fromisoformat(_text(value))
    if when.tzinfo is None:
        raise ValueError(value)
    return when


def _revision(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError(value)
    return tuple(_text(item) for item in value)


def _rows(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise TypeError(value)
    return {_text(table): _count(count) for table, count in value.items()}


# Each field of a manifest: how it is read, and what belongs there (for the message when it is not that).
_FIELDS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "name": (_text, "a backup name"),
    "kind": (_one_of(*KINDS), " or ".join(KINDS)),
    "created_at": (_utc_time, "an ISO 8601 time with its UTC offset"),
    "database": (_one_of(*DATABASES), " or ".join(DATABASES)),
    "revision": (_revision, "a list of migration revisions"),
    "rows": (_rows, "an object of table names and row counts"),
    "file": (_text, "a file name"),
    "size": (_count, "a number of bytes"),
    "sha256": (_sha256, "a SHA-256 in hex"),
    "encrypted": (_flag, "true or false"),
    "plaintext_size": (_count, "a number of bytes"),
    "plaintext_sha256": (_sha256, "a SHA-256 in hex"),
    "gatehouse_version": (_text, "a version"),
    "duration_seconds": (_seconds, "a number of seconds"),
}
