"""Structured logging: JSON lines (or console in development) on stderr, and JSON lines in LOG_FILE when set
(core/logfile.py: rotated weekly, gzipped, kept 30 days), with the request's context (request_id, user_id,
stream_id)."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, MutableMapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TextIO

import orjson
import structlog

from gatehouse.core.logfile import WeeklyFileHandler, open_log_file


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


class LogSettings(Protocol):
    """What logging reads of the settings (LOG_LEVEL, LOG_FORMAT, LOG_FILE)."""

    @property
    def log_level(self) -> str: ...

    @property
    def log_format(self) -> LogFormat: ...

    @property
    def log_file(self) -> Path | None: ...


# Keys whose values must never be logged, whatever a caller passes by mistake.
REDACTED_KEYS = frozenset(
    {
        "password",
        "api_key",
        "key",
        "token",
        "authorization",
        "cookie",
        "secret",
        "messages",
        "content",
        "prompt",
        "input",
        "session_token",
    }
)
# Their statements' parameters (SQLAlchemy's INFO, aiosqlite's DEBUG) and raw protocol traces (httpcore's DEBUG)
# carry data: hash inputs, emails, headers. They stay quiet even at LOG_LEVEL=DEBUG.
QUIET_LOGGERS = {
    "sqlalchemy": logging.WARNING,
    "aiosqlite": logging.INFO,
    "asyncpg": logging.INFO,
    "httpcore": logging.INFO,
}

Renderer = Callable[[Any, str, MutableMapping[str, Any]], str | bytes]


def _redact(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    for name in REDACTED_KEYS.intersection(event):
        event[name] = "[redacted]"
    return event


def _dumps(event: Any, **kw: Any) -> str:
    """orjson, several times faster than json; json for what orjson refuses (e.g. integers beyond 64 bits)."""
    try:
        return orjson.dumps(event, default=kw.get("default"), option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(event, default=repr)


SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    _redact,
]
JSON_RENDERER: Renderer = structlog.processors.JSONRenderer(serializer=_dumps)
# Processors added at run time (tracing's trace and span ids, core/tracing.py): none unless a feature asks.
_ADDED: list[Any] = []
# structlog's processor list: one list, refilled in place by each configuration, because loggers cached on first
# use keep the list they were built with (so a processor added later reaches them too).
_PROCESSORS: list[Any] = []


# --- handlers: stdlib records and structlog's lines go through the same ones --------------------------------


class TerminalHandler(logging.StreamHandler[TextIO]):
    """stderr: stdlib records through its formatter, structlog's already rendered lines as they are."""

    def emit_line(self, line: str) -> None:
        """Write one rendered line."""
        self.acquire()
        try:
            with contextlib.suppress(Exception):  # a broken stderr must not fail the request that logs
                self.stream.write(line + "\n")
                self.flush()
        finally:
            self.release()


# --- structlog's end of the pipeline --------------------------------------------------------------------


class _Render:
    """structlog's last processor: the terminal's line and, when it is not JSON, LOG_FILE's JSON line too.

    One instance, reconfigured in place: loggers cached on first use keep following the configuration.
    """

    def __init__(self) -> None:
        self.terminal: Renderer = JSON_RENDERER
        self.file: Renderer | None = None

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        if self.file is None:
            return self.terminal(logger, method, event)
        file_line = self.file(logger, method, event)  # first: the console renderer consumes the dict
        return (self.terminal(logger, method, event), file_line), {}


class _Writer:
    """structlog's logger: hands each rendered line to the handlers stdlib records go through (no LogRecord,
    no caller lookup: a line costs a few microseconds). One instance, its handlers swapped on reconfiguration."""

    def __init__(self) -> None:
        self.terminal: TerminalHandler | None = None
        self.file: WeeklyFileHandler | None = None

    def msg(self, line: str, file_line: str | None = None) -> None:
        """Write one event."""
        terminal, file = self.terminal, self.file
        if terminal is not None:
            terminal.emit_line(line)
        if file is not None:
            file.emit_line(line if file_line is None else file_line)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg


_RENDER = _Render()
_WRITER = _Writer()


class _NamedWriter:
    """What a logger named by `get_logger(name)` writes through: the one _Writer, and its name (per-logger levels)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def msg(self, line: str, file_line: str | None = None) -> None:
        """Write one event."""
        _WRITER.msg(line, file_line)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg


_NAMED: dict[str, _NamedWriter] = {}


def _writer(*args: Any) -> _Writer | _NamedWriter:
    name = args[0] if args and isinstance(args[0], str) else None
    if name is None:
        return _WRITER
    found = _NAMED.get(name)
    if found is None:
        found = _NAMED[name] = _NamedWriter(name)
    return found


# --- the level, changeable while running (PUT /admin/log-level) ------------------------------------------


class _Levels:
    """The level structlog's lines need, changed in place: `floor` is the lowest any logger lets through, so a
    call below it (a DEBUG line at INFO) costs one comparison; per-logger levels are looked up only above it."""

    def __init__(self) -> None:
        self.root = logging.INFO
        self.named: dict[str, int] = {}  # logger name (and its children, `name.`) -> level
        self.floor = logging.INFO
        self._resolved: dict[str, int] = {}

    def set(self, root: int, named: dict[str, int]) -> None:
        self.root, self.named = root, dict(named)
        self._resolved = {}
        self.floor = min([root, *named.values()])

    def of(self, writer: Any) -> int:
        """The level of the logger writing through `writer`: its own or its nearest parent's, else the root's."""
        name = getattr(writer, "name", "")
        found = self._resolved.get(name)
        if found is None:
            found = self.root
            for prefix in sorted(self.named, key=len, reverse=True):
                if name == prefix or name.startswith(prefix + "."):
                    found = self.named[prefix]
                    break
            self._resolved[name] = found
        return found


_LEVELS = _Levels()


def _interpolate(event: Any, args: tuple[Any, ...]) -> Any:
    return event % args if args else event


def _level_method(level: int) -> Any:
    name = logging.getLevelName(level).lower()

    def method(self: Any, event: Any = None, *args: Any, **kw: Any) -> Any:
        if level < _LEVELS.floor or (_LEVELS.named and level < _LEVELS.of(self._logger)):
            return None
        return self._proxy_to_logger(name, _interpolate(event, args), **kw)

    method.__name__ = name
    return method


def _exception(self: Any, event: Any = None, *args: Any, **kw: Any) -> Any:
    kw.setdefault("exc_info", True)
    return self.error(event, *args, **kw)


def _log(self: Any, level: int, event: Any = None, *args: Any, **kw: Any) -> Any:
    if level < _LEVELS.floor or level < _LEVELS.of(self._logger):
        return None
    return self._proxy_to_logger(logging.getLevelName(level).lower(), _interpolate(event, args), **kw)


# structlog's filtering logger, with the level read at each call instead of fixed in the class when configured:
# loggers cached on first use follow a level changed later.
LeveledLogger: type = type(
    "LeveledLogger",
    (structlog.BoundLoggerBase,),
    {
        "debug": _level_method(logging.DEBUG),
        "info": _level_method(logging.INFO),
        "msg": _level_method(logging.INFO),
        "warning": _level_method(logging.WARNING),
        "warn": _level_method(logging.WARNING),
        "error": _level_method(logging.ERROR),
        "critical": _level_method(logging.CRITICAL),
        "fatal": _level_method(logging.CRITICAL),
        "exception": _exception,
        "log": _log,
        "is_enabled_for": lambda self, level: level >= _LEVELS.of(self._logger),
        "get_effective_level": lambda self: _LEVELS.of(self._logger),
    },
)


def _formatter(renderer: Renderer) -> logging.Formatter:
    # format_exc_info here too: a stdlib record's traceback (uvicorn, asyncio) becomes text in the line,
    # not "<traceback object>".
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )


def configure_logging(settings: LogSettings) -> None:
    """Route structlog and stdlib logging through the same handlers (stderr; LOG_FILE too) at LOG_LEVEL.

    Raises LogFileError, leaving the previous configuration in place, when LOG_FILE cannot be written.
    """
    level = getattr(logging, settings.log_level)
    file = open_log_file(settings.log_file) if settings.log_file is not None else None
    terminal_renderer: Renderer = JSON_RENDERER
    if settings.log_format is LogFormat.CONSOLE:
        terminal_renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    terminal = TerminalHandler(sys.stderr)
    terminal.setFormatter(_formatter(terminal_renderer))
    handlers: list[logging.Handler] = [terminal]
    if file is not None:
        file.setFormatter(_formatter(JSON_RENDERER))  # the file is for machines: JSON, whatever LOG_FORMAT says
        handlers.append(file)

    _RENDER.terminal = terminal_renderer
    _RENDER.file = JSON_RENDERER if file is not None and terminal_renderer is not JSON_RENDERER else None
    previous = _WRITER.file
    _WRITER.terminal, _WRITER.file = terminal, file
    _PROCESSORS[:] = [*SHARED[:1], *_ADDED, *SHARED[1:], structlog.processors.format_exc_info, _RENDER]
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=LeveledLogger,
        logger_factory=_writer,
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    root.handlers[:] = handlers
    set_levels(level)
    if previous is not None:
        previous.close()
    # uvicorn's own access log duplicates ours (which has request ids); its errors still come through.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True


def set_levels(level: int | str, loggers: dict[str, int | str] | None = None) -> None:
    """The log level now, of everything (`level`) and of some loggers and their children (`loggers`, by name), for
    structlog's lines and stdlib's records alike. QUIET_LOGGERS keep their floors whatever is asked."""
    root = _as_level(level)
    named = {name: _as_level(value) for name, value in (loggers or {}).items()}
    for name in set(_LEVELS.named) - set(named):
        logging.getLogger(name).setLevel(logging.NOTSET)  # back to following the root
    _LEVELS.set(root, named)
    logging.getLogger().setLevel(root)
    for name, value in named.items():
        logging.getLogger(name).setLevel(value)
    # Alembic narrates every migration context at INFO (also on each readiness probe).
    logging.getLogger("alembic").setLevel(max(named.get("alembic", root), logging.WARNING))
    for name, floor in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(named.get(name, root), floor))


def current_levels() -> tuple[int, dict[str, int]]:
    """The level of everything, and the loggers that have their own."""
    return _LEVELS.root, dict(_LEVELS.named)


def _as_level(value: int | str) -> int:
    if isinstance(value, int):
        return value
    level = logging.getLevelName(value.upper())
    if not isinstance(level, int):
        raise ValueError(f"{value!r} is not a log level: use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def add_processor(processor: Any) -> None:
    """Run `processor` on every structlog line from now on, after the context is merged (loggers already cached
    included: their processor list is changed in place), until `remove_processor`."""
    if processor in _ADDED:
        return
    _ADDED.append(processor)
    if _PROCESSORS:  # configured: after merge_contextvars, as configure_logging places it
        _PROCESSORS.insert(1, processor)


def remove_processor(processor: Any) -> None:
    """Stop running a processor `add_processor` added."""
    if processor in _ADDED:
        _ADDED.remove(processor)
    if processor in _PROCESSORS:
        _PROCESSORS.remove(processor)


def bind_context(**values: Any) -> None:
    """Add values (user_id, stream_id) to every log line of the current request, the access line included."""
    structlog.contextvars.bind_contextvars(**values)


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; context variables (request_id, user_id, stream_id) are merged in."""
    return structlog.get_logger(name)
