"""`gatehouse logs`: LOG_FILE and its rotated files, filtered by time, level, request id, user, event and text."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import click
import typer

from gatehouse.accounts.users import service as users
from gatehouse.auth.errors import UserNotFound
from gatehouse.cli.common import db_session, err_console, load_settings, run
from gatehouse.diagnostics.logfiles import follow as follow_file
from gatehouse.diagnostics.logfiles import log_parts
from gatehouse.diagnostics.logfilter import LogFilter, Selected, Selection, log_lines, parse_when

NO_LOG_FILE = (
    "LOG_FILE is not set, so Gatehouse keeps no log file to read. Set LOG_FILE=/var/log/gatehouse/gatehouse.log "
    "(in the service's environment, then restart) to keep one, or pass --file PATH. Logs on stderr only are read "
    "where they are collected: `journalctl -u gatehouse --since -1h` (systemd) or "
    "`kubectl logs deploy/gatehouse --since=1h` (Kubernetes)."
)
LEVEL_STYLES = {"debug": "blue", "info": "green", "warning": "yellow", "error": "red", "critical": "magenta"}
FIRST_FIELDS = ("request_id", "user_id", "stream_id")  # after time, level and event: what ties lines together
HIDDEN_FIELDS = frozenset({"timestamp", "level", "event", "exception"})


class Level(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


def _when(option: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_when(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def _user_ids(user: str | None) -> frozenset[str]:
    """--user as ids: a number is the id; anything else is an email, looked up in the database."""
    if user is None:
        return frozenset()
    if user.strip().isdigit():
        return frozenset({str(int(user))})
    settings = load_settings()

    async def lookup() -> int:
        async with db_session(settings) as session:
            found = await users.get_by_email(session, email=user)
            if found is None:
                raise UserNotFound(f"No user with email {user}: give the user's id (--user 42) or their email.")
            return found.id

    return frozenset({str(run(lookup, settings))})


def _log_path(file: Path | None) -> Path:
    if file is not None:
        return file
    path = load_settings().log_file
    if path is None:
        err_console.print(f"[red]Error:[/red] {NO_LOG_FILE}", soft_wrap=True, highlight=False)
        raise typer.Exit(1)
    return path


def readable(selected: Selected) -> str:
    """One line per event: time, level, event, then the fields (`key=value`); a traceback below, indented."""
    entry = selected.entry
    if entry is None:
        return selected.text
    stamp = str(entry.get("timestamp", "")).replace("T", " ").removesuffix("Z")[:23]
    level = str(entry.get("level", "")).lower()
    head = click.style(f"{level.upper():<8}", fg=LEVEL_STYLES.get(level), bold=level in ("error", "critical"))
    names = [n for n in FIRST_FIELDS if n in entry] + [
        n for n in entry if n not in HIDDEN_FIELDS and n not in FIRST_FIELDS
    ]
    fields = " ".join(f"{click.style(name, fg='cyan')}={_value(entry[name])}" for name in names)
    line = f"{click.style(stamp, dim=True)} {head} {click.style(str(entry.get('event', '')), bold=True)} {fields}"
    trace = entry.get("exception")
    if trace:
        line += "\n" + "\n".join("    " + row for row in str(trace).splitlines())
    return line.rstrip()


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value) if not isinstance(value, dict | list) else repr(value)
    return f'"{text}"' if " " in text or not text else text


def logs(
    since: str | None = typer.Option(
        None, "--since", help="From this time: 30m, 1h, 2d ago, or 2026-12-07T10:00 (UTC)."
    ),
    until: str | None = typer.Option(None, "--until", help="Up to this time (same forms as --since)."),
    level: Level | None = typer.Option(None, "--level", case_sensitive=False, help="This level and above."),
    request_id: str | None = typer.Option(None, "--request-id", help="One request's lines (its X-Request-ID)."),
    user: str | None = typer.Option(None, "--user", help="One user's lines: their id, or their email (looked up)."),
    event: list[str] = typer.Option([], "--event", help="Event name or glob (upstream_*); repeat for several."),
    grep: str | None = typer.Option(None, "--grep", help="Lines containing this text (any case)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Then wait for new lines (across a rotation)."),
    as_json: bool | None = typer.Option(
        None, "--json/--text", help="Raw JSON lines, or one readable line per event (default: JSON when piped)."
    ),
    file: Path | None = typer.Option(None, "--file", help="Read this log (and its rotated files) instead of LOG_FILE."),
) -> None:
    """Show LOG_FILE's lines (its rotated and gzipped files too, oldest first), filtered.

    Non-JSON lines (LOG_FORMAT=console output) have no fields to filter on: only --grep shows them.
    """
    path = _log_path(file)
    criteria = LogFilter(
        since=_when("--since", since),
        until=_when("--until", until),
        level=level.value if level is not None else None,
        request_id=request_id,
        user_ids=_user_ids(user),
        events=tuple(event),
        grep=grep,
    )
    parts = log_parts(path)
    if not parts and not follow:
        err_console.print(
            f"[red]Error:[/red] {path} does not exist, nor any rotated file of it: no server has written to it yet "
            "(check LOG_FILE, or the path given with --file).",
            soft_wrap=True,
            highlight=False,
        )
        raise typer.Exit(1)
    raw = sys.stdout.isatty() is False if as_json is None else as_json
    selection = Selection(criteria)
    try:
        if follow:
            # The rotated weeks, then the current file from its start and on as it grows (no line lost between).
            rotated = [part for part in parts if not part.current]
            _write(selection.select(log_lines(rotated, criteria)), raw=raw, flush=False)
            _write(selection.select(follow_file(path, stop=lambda: False, from_start=True)), raw=raw, flush=True)
        else:
            _write(selection.select(log_lines(parts, criteria)), raw=raw, flush=False)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # `| head` closed the pipe: stop quietly (and let the interpreter's last flush go nowhere).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    _notes(selection)


def _write(lines: Iterator[Selected], *, raw: bool, flush: bool) -> None:
    out = sys.stdout
    color = out.isatty()
    for selected in lines:
        text = selected.text if raw else readable(selected)
        out.write((text if color or raw else click.unstyle(text)) + "\n")
        if flush:
            out.flush()
    out.flush()


def _notes(selection: Selection) -> None:
    if selection.plain_skipped:
        err_console.print(
            f"Note: lines that are not JSON (LOG_FORMAT=console?) were left out ({selection.plain_skipped}): "
            "only --grep shows them.",
            soft_wrap=True,
            highlight=False,
        )
    if selection.plain_shown and selection.criteria.by_fields:
        err_console.print(
            f"Note: lines shown that are not JSON ({selection.plain_shown}) were selected by --grep alone.",
            soft_wrap=True,
            highlight=False,
        )
