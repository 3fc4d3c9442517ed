"""Structured logging: JSON lines (or console in development), with request context."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from gatehouse.settings import LogFormat, Settings

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


def _redact(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    for name in REDACTED_KEYS.intersection(event):
        event[name] = "[redacted]"
    return event


def configure_logging(settings: Settings) -> None:
    """Route structlog and stdlib logging through one renderer at LOG_LEVEL."""
    level = getattr(logging, settings.log_level)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any
    if settings.log_format is LogFormat.CONSOLE:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # format_exc_info here too: a stdlib record's traceback (uvicorn, asyncio) becomes text in the line,
    # not "<traceback object>".
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's own access log duplicates ours (which has request ids); its errors still come through.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # Alembic narrates every migration context at INFO (also on each readiness probe).
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; context variables (request_id, user_id, stream_id) are merged in."""
    return structlog.get_logger(name)
