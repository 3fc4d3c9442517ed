"""Response models for the operator snapshot (GET /admin/metrics) and the health detail (GET /admin/health)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gatehouse.limits.prices.schemas import DecimalNumber


class Percentiles(BaseModel):
    p50: float | None = Field(description="Milliseconds, nearest rank; null when there is no value.")
    p95: float | None


class StreamCounts(BaseModel):
    started: int = Field(description="Streamed requests (`stream: true`), however they ended.")
    completed: int = Field(description="Streams that ended normally (status 200).")
    terminated: int = Field(description="Streams an operator ended (`terminated_by_operator`).")
    disconnected: int = Field(description="Streams the client walked away from (`client_disconnected`).")
    failed: int = Field(description="Streams that ended with an error (as counted in `errors`).")


class TrafficStats(BaseModel):
    requests: int
    succeeded: int = Field(description="Answered with a status below 400.")
    errors: int = Field(
        description="Failures on Gatehouse's or an upstream's side: status >= 500, or an `upstream_*` error code. "
        "Refusals (quota, rate limit, bad requests) are not errors."
    )
    error_rate: float | None = Field(description="errors / requests; null without requests.")
    quota_blocks: int = Field(description="Refused because a daily quota was used up (`quota_exceeded`).")
    rate_limit_hits: int = Field(description="Refused by a rate limit (`rate_limited`).")
    latency_ms: Percentiles = Field(description="Start to end, over the requests that reached an upstream.")
    ttft_ms: Percentiles = Field(description="Time to the first content token, over the requests that had one.")
    streams: StreamCounts
    tokens_in: int = Field(description="Prompt tokens.")
    tokens_out: int = Field(description="Completion tokens.")
    cost: DecimalNumber = Field(description="What the requests cost, in PRICE_CURRENCY, at the prices of their time.")
    cost_nanos: int = Field(description="`cost` in billionths of PRICE_CURRENCY (exact).")
    unpriced_requests: int = Field(
        description="Requests that used tokens of a model without a price: they cost 0 and are not in `cost`."
    )


class ModelStats(TrafficStats):
    model: str


class UpstreamStats(TrafficStats):
    upstream: str | None = Field(description="null: requests refused before an upstream was chosen.")


class SqlStats(BaseModel):
    statements: int = Field(description="Database statements the replicas ran, from their per-minute samples.")
    mean_ms: float | None = Field(description="Their mean duration; null without samples.")


class MetricsSnapshot(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    days: int | None = Field(description="The window in days; null when asked in `minutes`.")
    minutes: int | None = Field(description="The window in minutes when asked so; else null.")
    from_: datetime = Field(alias="from")
    to: datetime
    totals: TrafficStats
    by_model: list[ModelStats]
    by_upstream: list[UpstreamStats]
    sql: SqlStats


class SeriesPoint(BaseModel):
    bucket: str = Field(description="The UTC day (`YYYY-MM-DD`) or hour (`YYYY-MM-DDTHH`).")
    requests: int
    errors: int = Field(description="As in /admin/metrics: status >= 500 or an `upstream_*` error code.")
    tokens_in: int
    tokens_out: int
    cost: DecimalNumber
    cost_nanos: int


class MetricsSeries(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    days: int
    bucket: Literal["day", "hour"]
    from_: datetime = Field(alias="from")
    to: datetime
    points: list[SeriesPoint] = Field(description="Every bucket of the window, oldest first (zeros when idle).")


class DatabaseCheck(BaseModel):
    kind: str = Field(description="`sqlite` or `postgresql`.")
    status: Literal["ok", "error"]
    latency_ms: float | None = Field(description="A `SELECT 1`, round trip.")
    error: str | None


class MigrationsCheck(BaseModel):
    status: Literal["ok", "behind", "unknown"] = Field(description="`unknown` when the database does not answer.")
    current: list[str] | None = Field(description="The database's revision(s); null when unknown.")
    head: list[str] = Field(description="The revision(s) this code expects.")


class RedisCheck(BaseModel):
    status: Literal["ok", "error", "not configured"]
    latency_ms: float | None = Field(description="A PING, round trip.")
    error: str | None
    state: Literal["up", "down", "not configured"] = Field(
        description="What this replica's requests go by: `down` once a Redis call failed, until the probe (a PING "
        "every second) hears Redis again; meanwhile they skip Redis."
    )
    down_since: datetime | None = Field(description="When this replica found Redis unreachable; null while up.")
    down_error: str | None = Field(description="Why it is down: the failed call's error, then the probe's latest.")
    rate_limits: Literal["memory", "redis", "local", "refuse"] = Field(
        description="Where rate limits are counted now: `memory` (no REDIS_URL), `redis`, or while Redis is down "
        "RATE_LIMIT_REDIS_FALLBACK: `local` (each replica admits ceil(limit / live replicas)) or `refuse` (503 "
        "`rate_limiter_unavailable`)."
    )
    rate_limit_replicas: int | None = Field(
        description="Under `local`: the live replicas each limit is shared by (from the heartbeat table); else null."
    )


class StreamsCheck(BaseModel):
    local: int = Field(description="In-flight requests on this replica.")
    all: int | None = Field(description="On every replica (null when Redis could not be read in time).")


class DiskCheck(BaseModel):
    path: Literal["data", "backups", "logs"] = Field(
        description="What lives there: DATA_DIR (or the SQLite file's directory), BACKUP_DIR, LOG_FILE's directory."
    )
    directory: str
    free_bytes: int
    total_bytes: int
    free_percent: float
    status: Literal["ok", "warn"] = Field(description="`warn` below DISK_WARN_PERCENT or DISK_WARN_FREE_MB free.")
    reason: str | None


class StorageCheck(BaseModel):
    status: Literal["ok", "warn", "error"] = Field(
        description="`warn`: a disk is low (see `disks`); `error`: the sizes could not be read in time."
    )
    database_bytes: int | None = Field(
        description="SQLite: the file, its WAL and shared memory; PostgreSQL: pg_database_size."
    )
    wal_bytes: int | None = Field(description="SQLite's WAL file; null on PostgreSQL.")
    backup_dir_bytes: int | None
    backups: int | None = Field(description="Backups in BACKUP_DIR (by their manifests).")
    log_dir_bytes: int | None = Field(description="LOG_FILE and its rotated files; 0 without LOG_FILE.")
    disks: list[DiskCheck]
    error: str | None


class HealthReport(BaseModel):
    status: Literal["ok", "degraded", "failing"] = Field(
        description="`failing`: the database does not answer or its schema is not at head; "
        "`degraded`: an upstream is not up, Redis fails (or this replica found it down), or a disk is low; `ok` "
        "otherwise."
    )
    version: str
    replica: str
    uptime_seconds: float
    database: DatabaseCheck
    migrations: MigrationsCheck
    redis: RedisCheck
    upstreams: list[dict[str, Any]] = Field(description="Each upstream as this replica sees it.")
    streams: StreamsCheck
    storage: StorageCheck = Field(description="Sizes and free disk (`gatehouse db stats` has the detail).")
