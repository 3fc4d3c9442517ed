"""Prometheus metrics: every family Gatehouse exports, and how a scrape collects them.

One process: prometheus-client's default registry. Several uvicorn workers (`gatehouse serve --workers N`):
PROMETHEUS_MULTIPROC_DIR is set before the workers start, so prometheus-client keeps every value in a
per-process file there and a scrape, whichever worker answers it, sums the files of all workers.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from gatehouse import __version__

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
if _multiproc_dir := os.environ.get(MULTIPROC_ENV):
    # prometheus-client opens its files there as soon as a metric is defined (below): make sure it exists.
    os.makedirs(_multiproc_dir, exist_ok=True)

# Seconds. Gateway calls and streams run far longer than HTTP handlers, so they get a longer tail.
FAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SLOW_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

HTTP_REQUEST_DURATION = Histogram(
    "gatehouse_http_request_duration_seconds",
    "HTTP requests by route template (or 'unmatched'), method and status",
    ["route", "method", "status"],
    buckets=FAST_BUCKETS,
)
UPSTREAM_REQUEST_DURATION = Histogram(
    "gatehouse_upstream_request_duration_seconds",
    "Gateway calls that reached an upstream, start to settlement (a stream's whole length)",
    ["upstream", "model"],
    buckets=SLOW_BUCKETS,
)
UPSTREAM_TTFT = Histogram(
    "gatehouse_upstream_ttft_seconds",
    "Time from the start of a gateway call to its first content token",
    ["upstream", "model"],
    buckets=SLOW_BUCKETS,
)
TOKENS = Counter(
    "gatehouse_tokens", "Tokens by model: direction in (prompt) or out (completion)", ["model", "direction"]
)
GATEWAY_REQUESTS = Counter(
    "gatehouse_gateway_requests",
    "Gateway requests by client surface (chat, responses, messages, completions, ollama_chat, generate, "
    "embeddings) and status code",
    ["surface", "status"],
)
ACTIVE_STREAMS = Gauge(
    "gatehouse_active_streams", "Streams being relayed now (all workers)", multiprocess_mode="livesum"
)
# Set at each scrape (count_event_loop_tasks): a number that keeps growing under steady traffic is a task leak.
EVENT_LOOP_TASKS = Gauge(
    "gatehouse_event_loop_tasks", "asyncio tasks alive in the event loop (all workers)", multiprocess_mode="livesum"
)
STREAM_DURATION = Histogram(
    "gatehouse_stream_duration_seconds",
    "Streamed gateway calls, start to end, by client surface (the `endpoint` label)",
    ["endpoint"],
    buckets=SLOW_BUCKETS,
)
QUOTA_BLOCKS = Counter(
    "quota_blocks_total",
    "Requests refused by a daily quota (kind: messages or tokens used up; busy: held by requests in progress)",
    ["kind"],
)
QUOTA_WAIT = Histogram(
    "gatehouse_quota_wait_seconds",
    "How long requests waited for the caller's other requests to release quota (admitted or refused after)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
QUOTA_RECOVERED = Counter(
    "gatehouse_quota_reservations_recovered_total",
    "Reservations of dead replicas settled from their checkpoints (limits/recovery.py)",
)
RATE_LIMIT_HITS = Counter("rate_limit_hits_total", "Requests refused by a rate limit", ["action"])
IP_BLOCKED_REQUESTS = Counter(
    "gatehouse_ip_blocked_requests", "Requests refused because their client address is on the blocklist"
)
# Only with REDIS_URL: the lowest of the live workers' values, so one worker that cannot reach Redis shows.
REDIS_UP = Gauge(
    "gatehouse_redis_up",
    "1 while this process's requests use Redis, 0 while it is unreachable (they skip it and a probe PINGs it)",
    multiprocess_mode="livemin",
)
RATE_LIMIT_FALLBACK = Counter(
    "gatehouse_rate_limit_fallback",
    "Rate-limit decisions taken without Redis (RATE_LIMIT_REDIS_FALLBACK), by rule and outcome: admitted or "
    "limited by this replica's share (local), refused with 503 (refuse)",
    ["rule", "outcome"],
)
REQUEST_LOG_DROPPED = Counter(
    "gatehouse_request_log_dropped",
    "Request-log rows dropped, by reason: overflow (over 100,000 rows waiting while the database was away or its "
    "disk full: until then they wait in memory and are retried) or refused (a row a working database refused)",
    ["reason"],
)
SSE_PINGS = Counter("sse_pings_total", "Keep-alive pings sent on streams")
DB_STATEMENT_DURATION = Histogram(
    "gatehouse_db_statement_duration_seconds",
    "Database statements by verb (SELECT, INSERT, UPDATE, DELETE, OTHER)",
    ["kind"],
    buckets=DB_BUCKETS,
)
# The most recent value any live worker set: one series per (upstream, state), no pid label.
UPSTREAM_STATE = Gauge(
    "gatehouse_upstream_state",
    "1 for an upstream's current state (up, degraded, down, drain), 0 for the others",
    ["upstream", "state"],
    multiprocess_mode="livemostrecent",
)
BUILD_INFO = Gauge("gatehouse_build_info", "Always 1; the version label", ["version"], multiprocess_mode="livemax")
# `job_name`, not `job`: Prometheus's own `job` label names the scrape target.
JOB_RUNS = Counter(
    "gatehouse_job_runs", "Job runs finished by this process, by job and status (ok, failed)", ["job_name", "status"]
)
# The newest successful run of each job in the database (re-read every minute, and set by this process's runs);
# the max over replicas is the newest anywhere. Alerts compare it with gatehouse_job_scheduled_interval_seconds.
JOB_LAST_SUCCESS = Gauge(
    "gatehouse_job_last_success_timestamp_seconds",
    "Unix time at which the newest successful run of the job finished",
    ["job_name"],
    multiprocess_mode="livemax",
)
JOB_SCHEDULED = Gauge(
    "gatehouse_job_scheduled_interval_seconds",
    "The job's schedule period in seconds (0: runs only when asked)",
    ["job_name"],
    multiprocess_mode="livemax",
)
# Budget alerts (alerts/): counted by the replica that recorded each one, so the sum over replicas is every alert.
BUDGET_ALERTS = Counter(
    "gatehouse_budget_alerts",
    "Budgets that crossed an alert threshold (BUDGET_ALERT_THRESHOLDS), by scope (user, group, key), measure "
    "(messages, tokens, spend) and threshold (percent)",
    ["scope", "measure", "threshold"],
)
# Every replica computes the same values from the database (once a minute): the max over replicas is that value.
BUDGET_USED_PERCENT = Gauge(
    "gatehouse_budget_max_used_percent",
    "The highest share of its limit (percent) that any budget of the scope has used in its current period, by "
    "scope and measure",
    ["scope", "measure"],
    multiprocess_mode="livemax",
)
ALERT_WEBHOOKS = Counter(
    "gatehouse_alert_webhook_attempts",
    "Alert webhook delivery attempts by outcome (delivered, failed: answered other than 2xx or not at all)",
    ["outcome"],
)
# Storage (monitoring/storage.py), refreshed off the request path every STORAGE_REFRESH_SECONDS. Every replica on a
# host measures the same disks and files: the most recent value any live worker set, no pid label.
DISK_FREE = Gauge(
    "gatehouse_disk_free_bytes",
    "Free bytes (for Gatehouse's user) on the disk of a path: data (DATA_DIR), backups (BACKUP_DIR), logs "
    "(LOG_FILE's directory)",
    ["path"],
    multiprocess_mode="livemostrecent",
)
DISK_TOTAL = Gauge(
    "gatehouse_disk_total_bytes",
    "Size in bytes of the disk of a path: data, backups, logs",
    ["path"],
    multiprocess_mode="livemostrecent",
)
DATABASE_SIZE = Gauge(
    "gatehouse_database_size_bytes",
    "The database's size: SQLite's file with its WAL and shared-memory files, or PostgreSQL's pg_database_size",
    multiprocess_mode="livemostrecent",
)
BACKUP_DIR_SIZE = Gauge(
    "gatehouse_backup_dir_bytes", "Bytes of the files in BACKUP_DIR", multiprocess_mode="livemostrecent"
)
LOG_DIR_SIZE = Gauge(
    "gatehouse_log_dir_bytes",
    "Bytes of LOG_FILE and its rotated files (0 without LOG_FILE)",
    multiprocess_mode="livemostrecent",
)

UPSTREAM_STATES = ("up", "degraded", "down", "drain")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STATEMENT_KINDS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})
_STARTED_KEY = "gatehouse_statement_started"
# An execution option: statements run with it are timed in the histogram but left out of the totals below
# (the ops sampler's own INSERT, so that an idle process writes no samples).
UNCOUNTED_OPTION = "gatehouse_uncounted"
# Every statement this process ran and their total seconds, since it started: the ops sampler stores the
# increments (monitoring/sampler.py). Plain numbers: the statement events fire on the event loop's thread.
_statements = 0
_statement_seconds = 0.0


def set_upstream_state(upstream: str, state: str | None) -> None:
    """Mark `state` as the upstream's current one (1) and every other state 0 (all 0: the upstream is gone)."""
    for candidate in UPSTREAM_STATES:
        UPSTREAM_STATE.labels(upstream=upstream, state=candidate).set(1 if candidate == state else 0)


def mark_started() -> None:
    """Once per process at startup: the build info series."""
    BUILD_INFO.labels(version=__version__).set(1)


def mark_stopped() -> None:
    """At shutdown of a worker: its live gauges (active streams, upstream state) stop counting."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def http_method_label(method: str) -> str:
    """The method, or OTHER: a caller cannot mint new series with made-up methods."""
    return method if method in HTTP_METHODS else "OTHER"


def route_label(scope: dict[str, Any] | Any) -> str:
    """The matched route's template ("/admin/users/{user_id}"), never the raw path; else "unmatched"."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def statement_kind(statement: str) -> str:
    """The SQL verb of a statement, for the kind label; for `WITH ...`, the verb of the statement its common table
    expressions serve (the first verb outside their parentheses)."""
    verb = statement.lstrip()[:6].upper()
    if verb in STATEMENT_KINDS:
        return verb
    if verb[:4] == "WITH":
        depth = 0
        for match in _TOKENS.finditer(statement):
            word = match.group(0)
            if word == "(":
                depth += 1
            elif word == ")":
                depth -= 1
            elif depth == 0 and word.upper() in STATEMENT_KINDS:
                return word.upper()
    return "OTHER"


_TOKENS = re.compile(r"[()]|[A-Za-z]+")


def _before_statement(conn: Any, _cursor: Any, _statement: str, _params: Any, _context: Any, _many: bool) -> None:
    # A connection runs one statement at a time: one slot is enough.
    conn.info[_STARTED_KEY] = time.perf_counter()


def _after_statement(conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool) -> None:
    started = conn.info.pop(_STARTED_KEY, None)
    if started is not None:
        observe_statement(
            statement_kind(statement),
            time.perf_counter() - started,
            counted=not conn.get_execution_options().get(UNCOUNTED_OPTION),
        )


_CHILDREN: dict[tuple[Any, ...], Any] = {}
_CHILDREN_MAX = 10_000  # label values are bounded (routes, models, upstreams); this only guards memory


def child(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, remembered: labels() takes a lock and builds its key on every call."""
    key = (metric, *values)
    found = _CHILDREN.get(key)
    if found is None:
        if len(_CHILDREN) >= _CHILDREN_MAX:
            _CHILDREN.clear()
        found = _CHILDREN[key] = metric.labels(*values)
    return found


def observe_statement(kind: str, elapsed: float, *, counted: bool = True) -> None:
    """One statement's duration, from the engines' events or from db/statements.py; `counted` ones also go into
    the totals behind the ops snapshot's mean SQL latency."""
    global _statements, _statement_seconds
    child(DB_STATEMENT_DURATION, kind).observe(elapsed)
    if counted:
        _statements += 1
        _statement_seconds += elapsed


def statement_totals() -> tuple[int, float]:
    """(statements, seconds) this process has run since it started, on every instrumented engine."""
    return _statements, _statement_seconds


def instrument_engine(engine: AsyncEngine) -> None:
    """Time every statement on this engine (and the option engines sharing its pool, e.g. read_only's)."""
    target = engine.sync_engine
    if not event.contains(target, "before_cursor_execute", _before_statement):
        event.listen(target, "before_cursor_execute", _before_statement)
        event.listen(target, "after_cursor_execute", _after_statement)


def count_event_loop_tasks() -> None:
    """Set gatehouse_event_loop_tasks; called on the event loop, before a scrape."""
    EVENT_LOOP_TASKS.set(len(asyncio.all_tasks()))


def scrape() -> bytes:
    """The text exposition of every metric: this process's, or all workers' in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)
