"""Real PostgreSQL and Redis servers for the tests: running ones when usable, else throwaway ones."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import grp
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import asyncpg
import pytest
import redis
from sqlalchemy.engine import URL, make_url

__all__ = [
    "ServiceUnavailable",
    "ThrowawayServer",
    "create_postgres_database",
    "drop_postgres_database",
    "flush_redis_prefix",
    "port_answers",
    "postgres_admin_url",
    "postgres_database_url",
    "postgres_server",
    "redis_database_url",
    "redis_key_prefix",
    "redis_server",
    "redis_url",
    "start_throwaway_redis",
    "unique_redis_prefix",
]

T = TypeVar("T")

LOCALHOST = "127.0.0.1"
POSTGRES_PORT = 5432
REDIS_PORT = 6379

# Names of throwaway servers' directories: <prefix><kind>-<owner pid>-<random>. The owner pid lets a
# later session find and clean up servers whose session was killed before its atexit hooks ran.
_SCRATCH_PREFIX = "gatehouse-test-"
_SCRATCH_RE = re.compile(rf"^{re.escape(_SCRATCH_PREFIX)}(postgres|redis)-(\d+)-")
_HELP = "Run `bash scripts/test-services.sh` (as root it installs what is missing) or set {env}."
_PG_BINARIES = ("initdb", "pg_ctl", "postgres")
# Databases drop_postgres_database() must never touch, whatever URL it is handed.
_PROTECTED_DATABASES = frozenset({"postgres", "template0", "template1"})
_START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it: retry then

_lock = threading.RLock()  # one lookup/start per service per process, even with threads racing
_cache: dict[str, str] = {}
_reaped = False


class ServiceUnavailable(RuntimeError):
    """A PostgreSQL or Redis server for the tests could neither be found nor started."""


@dataclass
class ThrowawayServer:
    """A server this process started for the tests; stop() shuts it down and deletes its files."""

    kind: str
    url: str
    port: int
    base_dir: Path
    _shutdown: Callable[[], None] = field(repr=False)
    _owner_pid: int = field(default_factory=os.getpid, repr=False)
    _stopped: bool = field(default=False, repr=False)

    def stop(self) -> None:
        """Stop the server and remove its directory; idempotent."""
        # A forked child inherits atexit hooks: only the process that started the server stops it.
        if self._stopped or os.getpid() != self._owner_pid:
            return
        self._stopped = True
        try:
            self._shutdown()
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Small helpers


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _redis_pongs(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a Redis server on host:port answers PING without authentication."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a private event loop in a fresh thread and return its result."""
    # A fresh thread works both from plain sync code and from sync code called while an event loop
    # runs in this thread (asyncio.run would refuse there, and would reset pytest-asyncio's loop).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gatehouse-test-services") as pool:
        return pool.submit(asyncio.run, coro).result()


def _redact(url: str) -> str:
    """The URL with any password hidden, for messages."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def _quote_ident(name: str) -> str:
    """A PostgreSQL identifier quoted for SQL text."""
    return '"' + name.replace('"', '""') + '"'


def _tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, or a note that there is none."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        return True
    return True


def _cmdline(pid: int) -> bytes:
    """The command line of a process, or b"" if it is gone or unreadable."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def _wait_gone(pid: int, timeout: float) -> None:
    """Wait until a process that is not our child has exited, at most timeout seconds."""
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# Throwaway servers' directories


def _others_can_traverse(path: Path) -> bool:
    """Whether users other than the owner can reach files under path."""
    try:
        resolved = path.resolve()
        return all(p.stat().st_mode & stat.S_IXOTH for p in (resolved, *resolved.parents))
    except OSError:
        return False


def _scratch_roots() -> list[Path]:
    """Where throwaway servers' directories live: the temp dir, and /tmp when that is not reachable."""
    roots = [Path(tempfile.gettempdir())]
    if Path("/tmp") not in roots:
        roots.append(Path("/tmp"))
    return roots


def _make_scratch_dir(kind: str, shared: bool) -> Path:
    """A new private directory for a throwaway server (reachable by other users when shared)."""
    root = _scratch_roots()[0]
    # PostgreSQL run as the `postgres` user must reach its directory: a private TMPDIR won't do.
    if shared and not _others_can_traverse(root):
        root = Path("/tmp")
    return Path(tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{kind}-{os.getpid()}-", dir=root))


def _reap_stale_servers() -> None:
    """Stop and delete throwaway servers left behind by test sessions that died without cleaning up."""
    global _reaped
    with _lock:
        if _reaped:
            return
        _reaped = True
    for root in _scratch_roots():
        try:
            entries = list(root.iterdir())
        except OSError:
            continue
        for base in entries:
            match = _SCRATCH_RE.match(base.name)
            if not match or not base.is_dir() or _pid_alive(int(match.group(2))):
                continue
            if match.group(1) == "postgres":
                _kill_stale(base / "data" / "postmaster.pid", str(base).encode(), signal.SIGQUIT)
            else:
                _kill_stale(base / "redis.pid", None, signal.SIGTERM)
            shutil.rmtree(base, ignore_errors=True)


def _kill_stale(pid_file: Path, must_mention: bytes | None, sig: signal.Signals) -> None:
    """Signal the server named by a pid file, if that pid still runs the very same server."""
    try:
        fields = pid_file.read_text().split()
        pid = int(fields[0])
    except (OSError, ValueError, IndexError):
        return
    if must_mention is None:  # redis.pid holds "<pid> <port>"; redis-server shows the port in ps
        must_mention = f":{fields[1]}".encode() if len(fields) > 1 else b"redis-server"
    # The pid may have been reused since: only signal a process that is still that server.
    if must_mention not in _cmdline(pid):
        return
    with contextlib.suppress(OSError):
        os.kill(pid, sig)
    _wait_gone(pid, timeout=3)


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def _pg_bindir() -> Path | None:
    """The directory with initdb, pg_ctl and postgres of one version, or None."""
    candidates: list[Path] = []
    if in_path := shutil.which("pg_ctl"):
        candidates.append(Path(in_path).resolve().parent)

    def version(bindir: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", bindir.parent.name))

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for bindir in candidates:
        if all(os.access(bindir / name, os.X_OK) for name in _PG_BINARIES):
            return bindir
    return None


def _postgres_account() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as: None for ourselves, the `postgres` user when we are root."""
    # initdb and postgres refuse to run as root.
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        return pwd.getpwnam("postgres")
    useradd = shutil.which("useradd")
    if useradd is None:
        raise ServiceUnavailable("running as root, PostgreSQL needs a `postgres` user, and useradd is missing")
    try:
        grp.getgrnam("postgres")
        group_args = ["--gid", "postgres"]
    except KeyError:
        group_args = ["--user-group"]
    result = subprocess.run(
        [useradd, "--system", "--no-create-home", *group_args, "postgres"],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        # Another test process may have created it meanwhile: that is just as good.
        return pwd.getpwnam("postgres")
    except KeyError:
        raise ServiceUnavailable(f"could not create the `postgres` user: {result.stderr.strip()}") from None


def _run_as(account: pwd.struct_passwd | None, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool, as the given account when there is one."""
    return subprocess.run(
        args,
        cwd=cwd,
        # English messages, so the "port in use" check below can read the log.
        env={**os.environ, "LC_ALL": "C"},
        user=account.pw_uid if account else None,
        group=account.pw_gid if account else None,
        extra_groups=[] if account else None,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _start_throwaway_postgres() -> ThrowawayServer:
    """Initialise and start a private PostgreSQL cluster on a free port, stopped at exit."""
    bindir = _pg_bindir()
    if bindir is None:
        raise ServiceUnavailable(
            "PostgreSQL is needed by the tests, but none accepts a trust login as postgres/root on "
            f"{LOCALHOST}:{POSTGRES_PORT} and no server binaries ({', '.join(_PG_BINARIES)}) were found "
            "in PATH or /usr/lib/postgresql/*/bin. " + _HELP.format(env="TEST_POSTGRES_URL")
        )
    _reap_stale_servers()
    account = _postgres_account()
    base = _make_scratch_dir("postgres", shared=account is not None)
    data, log = base / "data", base / "postgres.log"
    try:
        if account is not None:
            os.chown(base, account.pw_uid, account.pw_gid)
        initdb = _run_as(
            account,
            # --no-sync: nothing here has to survive a crash; it makes initdb much faster.
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
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
            raise ServiceUnavailable(f"initdb failed in {data}:\n{initdb.stdout}{initdb.stderr}")
        pg_ctl = str(bindir / "pg_ctl")
        for _ in range(_START_ATTEMPTS):
            port = _free_port()
            # Durability is pointless for a throwaway cluster; turning it off makes tests faster.
            options = (
                f"-p {port} -k {shlex.quote(str(base))} -c listen_addresses={LOCALHOST} "
                "-c fsync=off -c full_page_writes=off -c synchronous_commit=off"
            )
            started = _run_as(
                account,
                [pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
                cwd=base,
            )
            if started.returncode == 0:
                break
            if "could not bind" not in _tail(log, 50):  # only a lost race for the port is worth a retry
                raise ServiceUnavailable(f"pg_ctl start failed:\n{started.stdout}{started.stderr}\n{_tail(log)}")
        else:
            raise ServiceUnavailable(f"pg_ctl start found no free port:\n{_tail(log)}")
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise

    def shutdown() -> None:
        stopped = _run_as(account, [pg_ctl, "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop"], cwd=base)
        if stopped.returncode != 0:  # last resort: immediate shutdown of the postmaster
            _kill_stale(data / "postmaster.pid", str(base).encode(), signal.SIGQUIT)

    server = ThrowawayServer("postgres", f"postgresql://postgres@{LOCALHOST}:{port}/postgres", port, base, shutdown)
    atexit.register(server.stop)
    return server


def _connect_args(url: URL, database: str | None = None) -> dict[str, Any]:
    """asyncpg.connect() keyword arguments for a SQLAlchemy URL."""
    return {
        "host": url.host or LOCALHOST,
        "port": url.port or POSTGRES_PORT,
        "user": url.username,
        "password": url.password,
        "database": database or url.database or "postgres",
        "timeout": 5,
    }


async def _pg_execute(url: URL, *statements: tuple[str, tuple[Any, ...]], database: str | None = None) -> None:
    """Run statements one by one on a fresh asyncpg connection."""
    conn = await asyncpg.connect(**_connect_args(url, database))
    try:
        for sql, args in statements:
            await conn.execute(sql, *args)
    finally:
        await conn.close()


def _pg_login(url: URL) -> None:
    """Connect and run SELECT 1, raising whatever asyncpg raises on failure."""
    _run(_pg_execute(url, ("SELECT 1", ())))


def _find_or_start_postgres() -> str:
    """The admin URL of the first usable PostgreSQL: TEST_POSTGRES_URL, the local one, a throwaway."""
    if env := os.environ.get("TEST_POSTGRES_URL"):
        url = make_url(env).set(drivername="postgresql")
        try:
            _pg_login(url)
        except Exception as exc:
            raise ServiceUnavailable(
                f"TEST_POSTGRES_URL={_redact(env)} does not accept a login: {type(exc).__name__}: {exc}"
            ) from exc
        return url.render_as_string(hide_password=False)
    if port_answers(LOCALHOST, POSTGRES_PORT):
        for user in ("postgres", "root"):
            url = URL.create("postgresql", username=user, host=LOCALHOST, port=POSTGRES_PORT, database="postgres")
            # Any failure (auth, missing role or database...) means: not usable as is, try the next.
            with contextlib.suppress(Exception):
                _pg_login(url)
                return url.render_as_string(hide_password=False)
    return _start_throwaway_postgres().url


def postgres_server() -> str:
    """Admin URL (postgresql://user@host:port/db) of a PostgreSQL server for this test process."""
    with _lock:
        if "postgres" not in _cache:
            _cache["postgres"] = _find_or_start_postgres()
        return _cache["postgres"]


def create_postgres_database(prefix: str = "gatehouse_test") -> str:
    """Create a new empty database and return its postgresql+asyncpg:// SQLAlchemy URL."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,39}", prefix):
        raise ValueError(f"database prefix must be 1-40 of [a-z0-9_], not starting with a digit: {prefix!r}")
    admin = make_url(postgres_server())
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    # template0, not the default template1: CREATE DATABASE fails while anyone is connected to its
    # template, and template0 never accepts connections (it is also guaranteed pristine).
    _run(_pg_execute(admin, (f"CREATE DATABASE {_quote_ident(name)} TEMPLATE template0", ())))
    return admin.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    """Drop a database made by create_postgres_database(), disconnecting its users first."""
    target = make_url(url)
    name = target.database
    admin_db = "postgres"
    with _lock:
        if cached := _cache.get("postgres"):
            admin = make_url(cached)
            if (admin.host, admin.port) == (target.host, target.port) and admin.database:
                admin_db = admin.database
    if not name or name in _PROTECTED_DATABASES or name == admin_db:
        raise ValueError(f"refusing to drop database {name!r}")
    _run(
        _pg_execute(
            target,
            # Open connections (a leaked engine, a test that failed midway) would block the DROP.
            (
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                (name,),
            ),
            (f"DROP DATABASE IF EXISTS {_quote_ident(name)}", ()),
            database=admin_db,
        )
    )


# ---------------------------------------------------------------------------------------------
# Redis


def start_throwaway_redis(port: int | None = None) -> ThrowawayServer:
    """A private redis-server of the caller's own, which it may stop and start again on the same `port` (an
    outage): never the shared one."""
    return _start_throwaway_redis(port)


def _start_throwaway_redis(port: int | None = None) -> ThrowawayServer:
    """Start a private, non-persistent redis-server on a free port (or on `port`), stopped at exit."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise ServiceUnavailable(
            f"Redis is needed by the tests, but none answers PING on {LOCALHOST}:{REDIS_PORT} and "
            "redis-server is not in PATH. " + _HELP.format(env="TEST_REDIS_URL")
        )
    _reap_stale_servers()
    base = _make_scratch_dir("redis", shared=False)
    log_path = base / "redis.log"
    log: IO[bytes] = log_path.open("wb")
    try:
        wanted = port
        for _ in range(_START_ATTEMPTS):
            port = wanted or _free_port()
            proc = subprocess.Popen(
                [
                    exe,
                    "--port",
                    str(port),
                    "--bind",
                    LOCALHOST,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(base),
                ],
                cwd=base,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C meant for pytest must not kill Redis before teardown is done.
                start_new_session=True,
            )
            # For _reap_stale_servers(): the port identifies this very server in `ps` later.
            (base / "redis.pid").write_text(f"{proc.pid} {port}\n")
            deadline = time.monotonic() + 10
            while proc.poll() is None and time.monotonic() < deadline and not _redis_pongs(LOCALHOST, port):
                time.sleep(0.02)
            if proc.poll() is None and _redis_pongs(LOCALHOST, port):
                break
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                raise ServiceUnavailable(f"redis-server did not answer PING within 10 s:\n{_tail(log_path)}")
            if "Address already in use" not in _tail(log_path, 50):  # only a lost port race is retried
                raise ServiceUnavailable(f"redis-server exited with {proc.returncode}:\n{_tail(log_path)}")
            if wanted:  # the port asked for is taken (a previous server's socket may linger a moment)
                time.sleep(0.2)
        else:
            raise ServiceUnavailable(f"redis-server found no free port:\n{_tail(log_path)}")
    except BaseException:
        log.close()
        shutil.rmtree(base, ignore_errors=True)
        raise

    def shutdown() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()

    server = ThrowawayServer("redis", f"redis://{LOCALHOST}:{port}/0", port, base, shutdown)
    atexit.register(server.stop)
    return server


def _find_or_start_redis() -> str:
    """The URL of the first usable Redis: TEST_REDIS_URL, the local one, a throwaway."""
    if env := os.environ.get("TEST_REDIS_URL"):
        client = redis.Redis.from_url(env, socket_connect_timeout=3, socket_timeout=3)
        try:
            client.ping()
        except Exception as exc:
            raise ServiceUnavailable(
                f"TEST_REDIS_URL={_redact(env)} does not answer PING: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            client.close()
        return env
    if _redis_pongs(LOCALHOST, REDIS_PORT):
        return f"redis://{LOCALHOST}:{REDIS_PORT}/0"
    return _start_throwaway_redis().url


def redis_server() -> str:
    """URL of a Redis server for this test process."""
    with _lock:
        if "redis" not in _cache:
            _cache["redis"] = _find_or_start_redis()
        return _cache["redis"]


def redis_database_url() -> str:
    """Redis URL for this test session; isolate keys from concurrent sessions with unique_redis_prefix()."""
    # Sessions share one Redis (and its 16 numbered databases would run out): key prefixes keep them
    # apart instead.
    return redis_server()


def unique_redis_prefix() -> str:
    """A key prefix no other test (in this or another session) uses, like 'gatehouse-test-123-ab12cd34:'."""
    return f"gatehouse-test-{os.getpid()}-{secrets.token_hex(4)}:"


def flush_redis_prefix(url: str, prefix: str) -> int:
    """Delete every key starting with prefix (SCAN + DEL) and return how many were deleted."""
    if not prefix:
        raise ValueError("refusing to flush an empty prefix: that would delete every key")
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"  # the prefix literally, then anything
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(client.delete(*batch))
    finally:
        client.close()
    return deleted


# ---------------------------------------------------------------------------------------------
# Fixtures: opt in from a conftest.py with `from tests.support.services import postgres_database_url`
# (and friends), or with `pytest_plugins = ["tests.support.services"]` in the top-level conftest.py.


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """Admin URL of the session's PostgreSQL server."""
    return postgres_server()


@pytest.fixture
def postgres_database_url() -> Iterator[str]:
    """postgresql+asyncpg:// URL of a fresh empty database, dropped after the test."""
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the session's Redis server."""
    return redis_database_url()


@pytest.fixture
def redis_key_prefix(redis_url: str) -> Iterator[str]:
    """A unique key prefix for one test; its keys are deleted after the test."""
    prefix = unique_redis_prefix()
    yield prefix
    flush_redis_prefix(redis_url, prefix)
