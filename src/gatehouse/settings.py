"""Typed settings from the environment (and NAME_FILE for secrets), under the names operators use."""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gatehouse.core.logging import LogFormat
from gatehouse.core.schedule import parse_schedule

# Values that appear in examples and tutorials; prod refuses them as secrets.
PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "change-me",
        "changeme",
        "change_me",
        "secret",
        "password",
        "admin",
        "replace_me",
        "replace-me",
        "dev-secret",
        "jwt-secret",
        "please-change",
        "example",
    }
)
MIN_SECRET_LENGTH = 32
MIN_TOKEN_LENGTH = 16  # JOB_TOKEN, BACKUP_KEY
DEFAULT_SQLITE_URL = "sqlite+aiosqlite:///./data/gatehouse.db"
SSL_MODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})  # libpq's and asyncpg's
# Where a front-end's key may name the person a request is for: a header, OpenAI's `user` (and the Responses API's
# `safety_identifier`), Anthropic's `metadata.user_id`.
ACTING_SOURCES = ("header", "user", "metadata")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name (RFC 9110's token)
DOMAIN_NAME = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}")


class Environment(StrEnum):
    DEV = "dev"
    PROD = "prod"


class RedisFallback(StrEnum):
    LOCAL = "local"  # while Redis is down, each replica enforces its share of a rate limit in memory
    REFUSE = "refuse"  # while Redis is down, rate-limited requests are refused (503 rate_limiter_unavailable)


class SignupMode(StrEnum):
    INVITE = "invite"  # POST /auth/signup needs an invite
    OPEN = "open"  # anyone may sign up; an invite, when given, sets the role
    CLOSED = "closed"  # nobody signs up: admins create users


class FileSecretsSource(PydanticBaseSettingsSource):
    """Reads `NAME_FILE` for any setting `NAME`: the way Docker and Kubernetes secrets arrive."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        env_name = f"{field_name.upper()}_FILE"
        path = os.environ.get(env_name)
        if not path:
            return None, field_name, False
        try:
            return Path(path).read_text().strip(), field_name, False
        except OSError as exc:
            # A ValidationError, like every other bad setting, so the CLI prints one line, not a traceback.
            message = f"{env_name} points at {path!r}, which cannot be read: {exc.strerror}"
            raise ValidationError.from_exception_data(
                self.settings_cls.__name__,
                [{"type": "value_error", "loc": (field_name,), "input": path, "ctx": {"error": ValueError(message)}}],
            ) from exc

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                values[key] = value
        return values


class Settings(BaseSettings):
    """Every setting Gatehouse reads; `.env.example` documents each one."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True, case_sensitive=False
    )

    environment: Environment = Environment.DEV

    # Database: DATABASE_URL, or the DB_* parts (PostgreSQL).
    database_url: str = ""
    db_host: str = ""
    db_port: int = 5432
    db_user: str = "postgres"
    db_password: SecretStr = SecretStr("")
    db_name: str = "gatehouse"
    db_pool_size: int = Field(default=10, ge=1, le=200)
    run_migrations: bool = True

    redis_url: str = ""
    redis_prefix: str = Field(default="gatehouse:", min_length=1, max_length=64)

    jwt_secret: SecretStr = SecretStr("")
    # A rotation window: the secret (or token) being replaced, still accepted while clients and peers move to the
    # new one; new values are always made with the current one. Empty: no window.
    jwt_secret_previous: SecretStr = SecretStr("")
    session_ttl_hours: int = Field(default=24 * 7, ge=1)
    login_backoff_max_seconds: float = Field(default=8.0, ge=0)  # 0: no delay after failed logins

    signup_mode: SignupMode = SignupMode.INVITE

    bootstrap_admin_email: str = "admin@example.com"
    bootstrap_admin_password: SecretStr = SecretStr("")
    bootstrap_admin_api_key: SecretStr = SecretStr("")

    # Upstreams: env shortcuts plus a YAML file (GATEHOUSE_CONFIG).
    ollama_base_url: str = ""
    ollama_api_key: SecretStr = SecretStr("")  # for an Ollama behind an authenticating proxy
    openai_base_url: str = ""
    openai_api_key: SecretStr = SecretStr("")
    anthropic_base_url: str = ""  # Anthropic's API (https://api.anthropic.com) or any Messages-compatible server
    anthropic_api_key: SecretStr = SecretStr("")
    gatehouse_config: Path | None = None
    demo_upstream: bool | None = None  # None: on when no upstream is configured
    upstream_connect_timeout: float = Field(default=5.0, gt=0)
    upstream_read_timeout: float = Field(default=300.0, gt=0)
    # The most of one answer Gatehouse holds in memory: a whole (non-streamed) answer, or one line of a stream
    # (a stream as a whole is relayed as it comes, with backpressure). Beyond it: upstream_bad_response.
    upstream_max_answer_bytes: int = Field(default=16 * 1024 * 1024, ge=64 * 1024)
    model_refresh_seconds: float = Field(default=60.0, ge=0)  # model discovery; 0: discover at start only
    # Health: background probes every UPSTREAM_PROBE_SECONDS (0: none), a circuit breaker after consecutive
    # failed requests (0: never open), and "degraded" for probes slower than UPSTREAM_DEGRADED_MS.
    upstream_probe_seconds: float = Field(default=10.0, ge=0)
    upstream_probe_timeout: float = Field(default=5.0, gt=0)
    upstream_degraded_ms: float = Field(default=2000.0, gt=0)
    upstream_breaker_failures: int = Field(default=5, ge=0)
    stream_ping_seconds: float = Field(default=15.0, ge=0)  # keep-alives on silent streams; 0: none
    # SIGTERM (core/shutdown.py): not ready at once but still serving for SHUTDOWN_DRAIN_SECONDS (at least the proxy's
    # check interval x its fall count, so it has taken the replica out), then no new connection; requests still
    # running SHUTDOWN_DEADLINE_SECONDS later end with `shutdown_deadline`. RUNBOOK "Rolling restarts".
    shutdown_drain_seconds: float = Field(default=5.0, ge=0)
    shutdown_deadline_seconds: float = Field(default=30.0, gt=0)

    # Model access: what a caller may use when no access rule of theirs (user or group) matches the model.
    model_access_default: Literal["allow", "deny"] = "allow"

    # Front-ends acting for their users (a key marked acts_for_users names the person each request is for).
    acts_for_users_header: str = "X-Gatehouse-User"  # a header name, or several separated by commas (first wins)
    acts_for_users_sources: str = "header,user,metadata"  # where the person may be named (the header first)
    acts_for_users_unnamed: Literal["refuse", "owner"] = "refuse"  # a request naming nobody: 400, or the key's owner
    acts_for_users_create_domains: str = ""  # email domains whose unknown people are created on first sight

    # Quotas and rate limits.
    default_messages_per_day: int | None = Field(default=None, ge=0)
    default_tokens_per_day: int | None = Field(default=None, ge=0)
    quota_timezone: str = "UTC"
    default_completion_allowance: int = Field(default=4096, ge=1)
    image_token_allowance: int = Field(default=2048, ge=0)
    # A request held back only by the caller's other requests in progress waits this long for them (0: refuse).
    quota_wait_seconds: float = Field(default=10.0, ge=0, le=300)
    # In-flight reservations' progress is written this often (what a dead replica's requests are settled to).
    quota_checkpoint_seconds: float = Field(default=2.0, gt=0, le=60)
    # Each replica's heartbeat; it is presumed dead after 4 missed ones (its reservations are then recovered).
    replica_heartbeat_seconds: float = Field(default=5.0, ge=0.2, le=60)
    rate_limit_per_minute: int | None = Field(default=60, ge=0)
    rate_limit_ip_per_minute: int | None = Field(default=30, ge=0)
    rate_limit_redis_fallback: RedisFallback = RedisFallback.LOCAL  # what rate limits do while Redis is unreachable
    # The one currency of the price table and of every cost (ISO 4217); a price in another is refused.
    price_currency: str = "USD"

    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    auth_cache_seconds: float = Field(default=300.0, ge=0)
    request_log_flush_seconds: float = Field(default=1.0, gt=0)

    metrics_token: SecretStr = SecretStr("")  # GET /metrics also accepts `Authorization: Bearer <this>`

    # `gatehouse doctor` (cli/doctor_checks/): the URL people reach Gatehouse at, e.g. https://ai.example.com (its TLS
    # certificate is checked).
    public_url: str = ""
    metrics_token_previous: SecretStr = SecretStr("")  # also accepted during a rotation window

    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.JSON
    log_file: Path | None = None  # also write log lines here: rotated weekly, kept 30 days, older ones gzipped
    # Slow-SQL logging (db/sqllog.py), off by default: statements slower than this many milliseconds are logged as
    # `slow_sql` (text without parameters, duration, request id); 0: off. LOG_SQL: every statement at DEBUG.
    slow_sql_ms: float = Field(default=0.0, ge=0)
    log_sql: bool = False
    # OpenTelemetry tracing (core/tracing.py), off by default; when on, the SDK's standard OTEL_* variables say where
    # spans go (OTEL_EXPORTER_OTLP_ENDPOINT), the service name and the sampler. OTEL_SDK_DISABLED=true turns it off.
    otel_enabled: bool = False

    data_dir: Path = Path("./data")

    # Data lifecycle (backups/, exports/, jobs/).
    backup_dir: Path = Path("./data/backups")
    backup_keep: int = Field(default=3, ge=1, le=1000)  # generations of regular backups kept in BACKUP_DIR
    backup_key: SecretStr = SecretStr("")  # encrypts backups (AES-256-GCM, key derived with scrypt); 16+ characters
    backup_schedule: str = ""  # e.g. "daily@03:00" (UTC); empty: no scheduled backups
    purge_schedule: str = "daily@04:00"  # the retention purge; empty: only when run by hand or an external scheduler
    audit_retention_days: int = Field(default=90, ge=0)  # 0: keep forever
    request_log_retention_days: int = Field(default=90, ge=0)  # 0: keep forever
    responses_retention_days: int = Field(default=30, ge=0)  # stored Responses API answers, as OpenAI's; 0: forever
    job_token: SecretStr = SecretStr("")  # X-Job-Token for POST /admin/jobs/{name}/run (an external scheduler)
    job_token_previous: SecretStr = SecretStr("")  # also accepted during a rotation window
    # Storage (monitoring/storage.py): /admin/health and `gatehouse doctor` warn when a disk (DATA_DIR, BACKUP_DIR, the
    # log directory) has less than DISK_WARN_PERCENT of its size or less than DISK_WARN_FREE_MB free, and doctor FAILs
    # below DISK_FAIL_*; the defaults match the alerts GatehouseDiskSpaceLow (15%) and ...Critical (5%).
    disk_warn_percent: float = Field(default=15.0, ge=0, le=100)
    disk_warn_free_mb: int = Field(default=2048, ge=0)
    disk_fail_percent: float = Field(default=5.0, ge=0, le=100)
    disk_fail_free_mb: int = Field(default=500, ge=0)
    storage_refresh_seconds: float = Field(default=60.0, ge=0)  # 0: the storage gauges are not refreshed
    # Database maintenance (`gatehouse db maintain`, the `maintain` job): optimize/ANALYZE/checkpoint on SQLite,
    # VACUUM (ANALYZE) on PostgreSQL; a SQLite VACUUM needs the file's size free plus this margin, or is refused.
    maintain_schedule: str = "weekly@sun 04:30"  # empty: only when run by hand or an external scheduler
    vacuum_free_margin_mb: int = Field(default=64, ge=0)

    # Budget alerts (alerts/): percentages of a limit at which a budget alerts, once per budget, measure, threshold
    # and period ("off": none), checked every BUDGET_ALERT_CHECK_SECONDS on each replica (0: not on this one).
    budget_alert_thresholds: str = "80,100"
    budget_alert_check_seconds: float = Field(default=5.0, ge=0, le=3600)
    # A signed JSON webhook per alert (empty: none); retried with exponential backoff, from BACKOFF_SECONDS
    # doubling, up to MAX_ATTEMPTS attempts within MAX_SECONDS of the alert.
    alert_webhook_url: SecretStr = SecretStr("")  # a secret: such URLs often carry a token in their path
    alert_webhook_secret: SecretStr = SecretStr("")  # signs each webhook (HMAC-SHA256); required with the URL
    alert_webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)  # connect, and read, each
    alert_webhook_max_attempts: int = Field(default=8, ge=1, le=50)
    alert_webhook_backoff_seconds: float = Field(default=5.0, gt=0, le=3600)
    alert_webhook_max_seconds: float = Field(default=3600.0, gt=0, le=7 * 24 * 3600)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order: explicit arguments, environment, NAME_FILE, .env file."""
        return init_settings, env_settings, FileSecretsSource(settings_cls), dotenv_settings

    @field_validator("ollama_base_url", "openai_base_url", "anthropic_base_url", "redis_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.strip().rstrip("/")

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        url = value.strip().rstrip("/")
        parts = urlsplit(url)
        if url and (parts.scheme not in ("http", "https") or not parts.hostname):
            raise ValueError(
                "must be the http:// or https:// URL people reach Gatehouse at, e.g. https://ai.example.com; "
                f"got {url!r}"
            )
        return url

    @field_validator("quota_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"QUOTA_TIMEZONE {value!r} is not a known time zone (e.g. UTC, Europe/Berlin)") from exc
        return value

    @field_validator("price_currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        code = value.strip().upper()
        if len(code) != 3 or not code.isascii() or not code.isalpha():
            raise ValueError(f"must be an ISO 4217 currency code of three letters, e.g. USD or EUR; got {value!r}")
        return code

    @field_validator("acts_for_users_header", "acts_for_users_sources", "acts_for_users_create_domains")
    @classmethod
    def _acting_lists(cls, value: str, info: Any) -> str:
        items = [item.strip() for item in value.split(",") if item.strip()]
        name = info.field_name.upper()
        if info.field_name == "acts_for_users_header":
            bad = [item for item in items if not HEADER_NAME.fullmatch(item)]
            if bad or not items:
                raise ValueError(f"{name} must be header names separated by commas, e.g. X-Gatehouse-User")
        elif info.field_name == "acts_for_users_sources":
            bad = [item for item in (i.lower() for i in items) if item not in ACTING_SOURCES]
            if bad or not items:
                raise ValueError(f"{name} must be some of {', '.join(ACTING_SOURCES)}, separated by commas")
            items = [item.lower() for item in items]
        else:
            items = [item.lower().removeprefix("@") for item in items]
            bad = [item for item in items if not DOMAIN_NAME.fullmatch(item)]
            if bad:
                raise ValueError(f"{name}: {', '.join(bad)} is not an email domain (e.g. example.com)")
        return ",".join(items)

    @field_validator("backup_schedule", "purge_schedule", "maintain_schedule")
    @classmethod
    def _schedule(cls, value: str, info: Any) -> str:
        value = value.strip()
        if value:
            try:
                parse_schedule(value)
            except ValueError as exc:
                raise ValueError(f"{info.field_name.upper()}: {exc}") from exc
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("budget_alert_thresholds")
    @classmethod
    def _thresholds(cls, value: str) -> str:
        return ",".join(str(level) for level in parse_thresholds(value)) or "off"

    @field_validator("alert_webhook_url")
    @classmethod
    def _webhook_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value().strip()
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                # The value itself is left out: a webhook URL may carry a token in its path or query.
                raise ValueError("must be an http:// or https:// URL with a host, e.g. https://hooks.example.com/x")
        return SecretStr(url)

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str) -> str:
        # A field validator (not only the model one below), so an error is reported under DATABASE_URL.
        return normalise_database_url(value) if value.strip() else ""

    @model_validator(mode="after")
    def _resolve_database_url(self) -> Settings:
        if not self.database_url:
            self.database_url = normalise_database_url(self._url_from_parts())
        return self

    def _url_from_parts(self) -> str:
        if not self.db_host:
            return DEFAULT_SQLITE_URL
        password = self.db_password.get_secret_value()
        auth = quote(self.db_user, safe="") + (f":{quote(password, safe='')}" if password else "")
        host = f"[{self.db_host}]" if ":" in self.db_host and not self.db_host.startswith("[") else self.db_host  # IPv6
        return f"postgresql+asyncpg://{auth}@{host}:{self.db_port}/{quote(self.db_name, safe='')}"

    @property
    def is_prod(self) -> bool:
        return self.environment is Environment.PROD

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def problems(self) -> list[str]:
        """What makes these settings unsafe to serve with; empty in dev unless something is broken."""
        found: list[str] = []
        if self.is_prod:
            secret = self.jwt_secret.get_secret_value()
            if not secret:
                found.append(
                    "JWT_SECRET is not set: set it (or JWT_SECRET_FILE) to 32+ random characters, "
                    "e.g. `gatehouse secret generate --kind jwt`"
                )
            for name in ("jwt_secret", "jwt_secret_previous"):
                value = getattr(self, name).get_secret_value()
                if value and value.lower() in PLACEHOLDER_SECRETS:
                    found.append(f"{name.upper()} is a placeholder value: replace it with 32+ random characters")
                elif value and len(value) < MIN_SECRET_LENGTH:
                    found.append(f"{name.upper()} is {len(value)} characters: use at least {MIN_SECRET_LENGTH}")
            password = self.bootstrap_admin_password.get_secret_value()
            if password and (password.lower() in PLACEHOLDER_SECRETS or len(password) < 12):
                found.append(
                    "BOOTSTRAP_ADMIN_PASSWORD is a default or weak value: set a strong one (12+ "
                    "characters), or leave it empty to have one generated and printed once"
                )
            for name in ("job_token", "job_token_previous", "backup_key"):
                value = getattr(self, name).get_secret_value()
                if value and (value.lower() in PLACEHOLDER_SECRETS or len(value) < MIN_TOKEN_LENGTH):
                    found.append(
                        f"{name.upper()} is a default or short value: use {MIN_TOKEN_LENGTH}+ random characters"
                    )
            key = self.bootstrap_admin_api_key.get_secret_value()
            if key and (key.lower() in PLACEHOLDER_SECRETS or len(key) < 24):
                found.append("BOOTSTRAP_ADMIN_API_KEY is a default or short value: use 24+ random characters")
        found.extend(self._webhook_problems())
        return found

    def _webhook_problems(self) -> list[str]:
        """An alert webhook needs its secret everywhere (receivers verify each one with it); prod wants a strong one."""
        if not self.alert_webhook_url.get_secret_value():
            return []
        secret = self.alert_webhook_secret.get_secret_value()
        if not secret:
            return [
                "ALERT_WEBHOOK_URL is set but ALERT_WEBHOOK_SECRET is not: set it (or ALERT_WEBHOOK_SECRET_FILE) to "
                f"{MIN_TOKEN_LENGTH}+ random characters and give the same value to the receiver, which verifies "
                "every webhook with it"
            ]
        if self.is_prod and (secret.lower() in PLACEHOLDER_SECRETS or len(secret) < MIN_TOKEN_LENGTH):
            return [f"ALERT_WEBHOOK_SECRET is a default or short value: use {MIN_TOKEN_LENGTH}+ random characters"]
        return []

    @property
    def alert_thresholds(self) -> tuple[int, ...]:
        """BUDGET_ALERT_THRESHOLDS as percentages, lowest first (empty: no budget alerts)."""
        return parse_thresholds(self.budget_alert_thresholds)

    def effective_jwt_secret(self) -> str:
        """The server secret; in dev, one generated once and kept in DATA_DIR when none is set."""
        secret = self.jwt_secret.get_secret_value()
        if secret:
            return secret
        if self.is_prod:
            raise RuntimeError("JWT_SECRET is required in prod")
        path = self.data_dir / "jwt_secret"
        try:
            return _read_secret(path)
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        generated = secrets.token_urlsafe(48)
        # Written aside, then linked into place (atomic, never replacing): workers starting together read
        # either no file or a whole one, and every loser of the race adopts the winner's secret.
        fd, staging = tempfile.mkstemp(dir=path.parent, prefix=".jwt_secret.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(generated)
            try:
                os.link(staging, path)
            except FileExistsError:
                return _read_secret(path)
        finally:
            os.unlink(staging)
        return generated


def _read_secret(path: Path) -> str:
    """A kept secret; an empty file is an error, never an empty secret."""
    secret = path.read_text().strip()
    if not secret:
        raise RuntimeError(f"{path} is empty: delete it to have a new secret generated, or set JWT_SECRET")
    return secret


def parse_thresholds(text: str) -> tuple[int, ...]:
    """BUDGET_ALERT_THRESHOLDS: whole percentages from 1 to 100, comma-separated (`80,100`), or `off` for none."""
    spec = text.strip().lower()
    if spec in ("off", "none"):
        return ()
    levels: set[int] = set()
    for part in spec.split(","):
        part = part.strip().rstrip("%")
        if not part.isascii() or not part.isdigit() or not 1 <= int(part) <= 100:
            raise ValueError(f"{text!r}: give whole percentages from 1 to 100, comma-separated (e.g. 80,100), or off")
        levels.add(int(part))
    return tuple(sorted(levels))


def normalise_database_url(url: str) -> str:
    """Accept the URL spellings operators paste and pick the async driver for each."""
    url = url.strip()
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://", "postgresql+psycopg://"):
        if url.startswith(prefix):
            return _asyncpg_ssl("postgresql+asyncpg://" + url[len(prefix) :])
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    if url.startswith("postgresql+asyncpg://"):
        return _asyncpg_ssl(url)
    if url.startswith("sqlite+aiosqlite://"):
        return url
    raise ValueError(
        "DATABASE_URL must start with postgresql:// (PostgreSQL) or sqlite:/// (a file path); "
        f"got {url.split(':', 1)[0]}://..."
    )


def _asyncpg_ssl(url: str) -> str:
    """libpq's `sslmode=...` (what hosting providers hand out) as asyncpg's `ssl=...`, which takes the same modes."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    if not any(name == "sslmode" for name, _ in params):
        return url
    if any(name == "ssl" for name, _ in params):
        raise ValueError("DATABASE_URL has both sslmode= and ssl=: keep one")
    for name, value in params:
        if name == "sslmode" and value not in SSL_MODES:
            raise ValueError(f"DATABASE_URL sslmode={value!r} is not one of {', '.join(sorted(SSL_MODES))}")
    query = urlencode([("ssl" if name == "sslmode" else name, value) for name, value in params])
    return urlunsplit(parts._replace(query=query))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
