"""`gatehouse config show`: each setting's effective value and where it came from (the environment, a NAME_FILE
file, the .env file, or the default), secrets redacted; and variables that look like a misspelt setting.

The order of the sources is the one Settings reads them in (settings.py: environment, NAME_FILE, .env).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values
from pydantic import SecretStr

from gatehouse.settings import Settings

REDACTED = "********"
# Variables Gatehouse reads that are not Settings fields (uvicorn's, prometheus-client's, its own markers).
OTHER_KNOWN = frozenset({"FORWARDED_ALLOW_IPS", "PROMETHEUS_MULTIPROC_DIR", "GATEHOUSE_PREPARED"})
# How alike a shell variable must be to a setting's name to be reported (difflib's ratio); a .env file holds only
# settings, so any unknown name there is reported, with its closest match when there is one.
ENV_CUTOFF = 0.85
PREFIXED_CUTOFF = 0.7  # for a variable that starts like settings do (OPENAI_, JOB_, DB_...)
DOTENV_CUTOFF = 0.6


@dataclass(frozen=True)
class Effective:
    """One setting: its name, its value as shown (secrets redacted), and its source."""

    name: str
    value: str
    source: str  # environment | file | .env | default
    detail: str | None = None  # the NAME_FILE path, or the .env file


@dataclass(frozen=True)
class Suspect:
    """A variable no setting reads, and the setting it most likely means."""

    name: str
    where: str  # environment | .env
    closest: str | None


def redact_url(url: str) -> str:
    """A URL with its password (if any) replaced: postgresql://app:********@db:5432/gatehouse."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{host}"))


def shown(settings: Settings, name: str) -> str:
    """A setting's value as `config show` prints it: secrets as REDACTED when set, URLs without their password."""
    value: Any = getattr(settings, name)
    if isinstance(value, SecretStr):
        return REDACTED if value.get_secret_value() else ""
    if name.endswith("_url") and isinstance(value, str):  # postgresql://user:password@host/db, https://u:p@ollama
        return redact_url(value)
    if value is None:
        return ""
    return str(value.value if hasattr(value, "value") else value)


def _environ() -> dict[str, str]:
    # Settings are case-insensitive: the upper-case name stands for every spelling.
    return {name.upper(): value for name, value in os.environ.items()}


def _dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    return {name.upper(): value for name, value in dotenv_values(path).items() if value is not None}


def effective(settings: Settings, *, env_file: Path = Path(".env")) -> list[Effective]:
    """Every setting, in declaration order, with its value and source."""
    environ, dotenv = _environ(), _dotenv(env_file)
    found = []
    for name in type(settings).model_fields:
        upper = name.upper()
        if environ.get(upper):  # empty counts as unset (env_ignore_empty)
            source, detail = "environment", None
        elif environ.get(f"{upper}_FILE"):
            source, detail = "file", environ[f"{upper}_FILE"]
        elif dotenv.get(upper):
            source, detail = ".env", str(env_file)
        else:
            source, detail = "default", None
        found.append(Effective(upper, shown(settings, name), source, detail))
    return found


def known_names() -> set[str]:
    """Every variable name a setting is read from: NAME and NAME_FILE."""
    names = {name.upper() for name in Settings.model_fields}
    return names | {f"{name}_FILE" for name in names} | OTHER_KNOWN


def _prefixes(names: set[str]) -> set[str]:
    return {name.split("_", 1)[0] + "_" for name in names if "_" in name}


def suspects(*, env_file: Path = Path(".env"), environ: dict[str, str] | None = None) -> list[Suspect]:
    """Variables that look like settings but are none: every unknown name in the .env file, and those of the
    environment that are close to a setting's name (not every variable of the shell)."""
    known = known_names()
    ordered = sorted(known)
    prefixes = _prefixes({name.upper() for name in Settings.model_fields})
    found: list[Suspect] = []
    for name in sorted(_dotenv(env_file)):
        if name not in known:
            close = difflib.get_close_matches(name, ordered, n=1, cutoff=DOTENV_CUTOFF)
            found.append(Suspect(name, ".env", close[0] if close else None))
    for name in sorted(environ if environ is not None else _environ()):
        if name in known:
            continue
        cutoff = PREFIXED_CUTOFF if any(name.startswith(prefix) for prefix in prefixes) else ENV_CUTOFF
        close = difflib.get_close_matches(name, ordered, n=1, cutoff=cutoff)
        if close:
            found.append(Suspect(name, "environment", close[0]))
    return found
