"""A database that cannot be reached, or has no connection left, is a 503 with Retry-After, not a 500."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import create_async_engine

from gatehouse.db.engine import create_sessionmaker
from tests.conftest import Harness
from tests.support.server import free_port


async def test_unreachable_database_is_503(harness: Harness) -> None:
    dead = create_async_engine(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none", connect_args={"timeout": 2})
    harness.runtime.auth.sessionmaker = create_sessionmaker(dead)
    try:
        response = await harness.client.get("/v1/models", headers=harness.as_key("gh_cold_key_not_cached_yet_123"))
        ollama = await harness.client.get("/api/tags", headers=harness.as_key("gh_another_cold_key_456789"))
    finally:
        await dead.dispose()
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "database_unavailable"
    assert response.headers["retry-after"] == "1"
    assert ollama.status_code == 503 and isinstance(ollama.json()["error"], str)
