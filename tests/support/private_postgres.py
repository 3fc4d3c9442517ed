"""A PostgreSQL server of one test's own that it may stop (`fast`, or `immediate`: a crash) and start again on the
same port and data directory: never the machine's shared server, which other tests use meanwhile."""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import URL

from tests.support.services import (
    LOCALHOST,
    ServiceUnavailable,
    _free_port,
    _kill_stale,
    _make_scratch_dir,
    _pg_bindir,
    _pg_execute,
    _postgres_account,
    _quote_ident,
    _reap_stale_servers,
    _run,
    _run_as,
    _tail,
    port_answers,
)

StopMode = Literal["smart", "fast", "immediate"]


@dataclass
class PrivatePostgres:
    """A private cluster: `stop(mode)` and `start()` again keep its port, data and databases."""

    port: int
    base: Path
    _bindir: Path
    _account: pwd.struct_passwd | None

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"

    @property
    def admin_url(self) -> URL:
        return URL.create("postgresql", username="postgres", host=LOCALHOST, port=self.port, database="postgres")

    def _pg_ctl(self, *args: str) -> None:
        done = _run_as(self._account, [str(self._bindir / "pg_ctl"), "-D", str(self.data), *args], cwd=self.base)
        if done.returncode != 0:
            raise ServiceUnavailable(f"pg_ctl {' '.join(args)} failed:\n{done.stdout}{done.stderr}\n{_tail(self.log)}")

    def start(self) -> None:
        """Start (again) on the same port; returns once it accepts connections."""
        # Committed means on disk here (synchronous_commit on, unlike the shared throwaway server): an immediate
        # stop must not lose a transaction the client was told is committed. fsync stays off: the machine does
        # not crash, only the server, and the page cache keeps what was written.
        options = (
            f"-p {self.port} -k {shlex.quote(str(self.base))} -c listen_addresses={LOCALHOST} "
            "-c fsync=off -c full_page_writes=off -c synchronous_commit=on -c max_connections=200"
        )
        self._pg_ctl("-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server: `fast` disconnects everyone and shuts down cleanly, `immediate` as a crash would."""
        self._pg_ctl("-m", mode, "-w", "-t", "30", "stop")

    @property
    def running(self) -> bool:
        return port_answers(LOCALHOST, self.port)

    def create_database(self, name: str = "gatehouse") -> str:
        """A new database; its postgresql+asyncpg:// SQLAlchemy URL."""
        _run(_pg_execute(self.admin_url, (f"CREATE DATABASE {_quote_ident(name)} TEMPLATE template0", ())))
        return self.admin_url.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)

    def destroy(self) -> None:
        """Stop it (if running) and delete its files."""
        with contextlib.suppress(ServiceUnavailable):
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        _kill_stale(self.data / "postmaster.pid", str(self.base).encode(), signal.SIGQUIT)
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """Initialise and start a private cluster on a free port; destroyed afterwards."""
    bindir = _pg_bindir()
    if bindir is None:
        raise ServiceUnavailable("no PostgreSQL server binaries in PATH or /usr/lib/postgresql/*/bin")
    _reap_stale_servers()
    account = _postgres_account()
    base = _make_scratch_dir("postgres", shared=account is not None)
    server = PrivatePostgres(_free_port(), base, bindir, account)
    try:
        if account is not None:
            os.chown(base, account.pw_uid, account.pw_gid)
        initdb = _run_as(
            account,
            [
                str(bindir / "initdb"),
                "-D",
                str(server.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-locale",
                "--encoding=UTF8",
                "--no-sync",
            ],
            cwd=base,
        )
        if initdb.returncode != 0:
            raise ServiceUnavailable(f"initdb failed in {server.data}:\n{initdb.stdout}{initdb.stderr}")
        server.start()
        yield server
    finally:
        server.destroy()
