"""The process's database: its engines and session factories, opened and closed together."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gatehouse.db.engine import create_autocommit_engine, create_engine, create_sessionmaker, read_only
from gatehouse.db.migrate import head_revisions
from gatehouse.settings import Settings


@dataclass(eq=False, repr=False)
class Database:
    """One pool for transactions (and its read-only view), and a small autocommit pool for single statements."""

    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    read_engine: AsyncEngine  # the same pool; SQLite transactions on it begin deferred (db/engine.py read_only)
    read_sessionmaker: async_sessionmaker[AsyncSession]  # for lookups that never write (auth, readiness)
    autocommit_engine: AsyncEngine  # a small pool of its own, for single atomic statements
    head_revisions: tuple[str, ...]  # the migration head(s) this code expects

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self.engine.dialect.name

    async def close(self) -> None:
        """Close both pools."""
        await self.autocommit_engine.dispose()
        await self.engine.dispose()


def open_database(settings: Settings) -> Database:
    """The engines for DATABASE_URL (no connection is made yet)."""
    engine = create_engine(settings)
    read_engine = read_only(engine)
    return Database(
        engine=engine,
        sessionmaker=create_sessionmaker(engine),
        read_engine=read_engine,
        read_sessionmaker=create_sessionmaker(read_engine),
        autocommit_engine=create_autocommit_engine(settings),
        head_revisions=head_revisions(),
    )
