"""Logging: a stdlib record's traceback (uvicorn, asyncio) is text in the JSON line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import orjson

from gatehouse.ops.logging import configure_logging
from tests.conftest import make_settings


def test_stdlib_tracebacks_are_rendered_as_text(tmp_path: Path) -> None:
    configure_logging(make_settings("sqlite+aiosqlite:///:memory:", tmp_path))
    formatter = logging.getLogger().handlers[0].formatter
    assert formatter is not None
    try:
        raise RuntimeError("it broke")
    except RuntimeError:
        record = logging.LogRecord(
            "uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application", None, sys.exc_info()
        )
    line = orjson.loads(formatter.format(record))
    assert line["event"] == "Exception in ASGI application"
    assert "Traceback (most recent call last)" in line["exception"]
    assert "RuntimeError: it broke" in line["exception"]
    assert "<traceback object" not in formatter.format(record)
