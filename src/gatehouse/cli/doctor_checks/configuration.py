"""Checks on the settings alone (no network): prod mode, Settings.problems(), secret strength and where the secrets
come from, and the rest of the runbooks' production checklist that maps onto a setting."""

from __future__ import annotations

import math
import os
from collections import Counter

from pydantic import SecretStr

from gatehouse.cli.doctor_checks.report import Check, failed, passed, skipped, warned
from gatehouse.settings import MIN_SECRET_LENGTH, MIN_TOKEN_LENGTH, PLACEHOLDER_SECRETS, Settings, SignupMode

# The server-side secrets whose strength doctor judges, and the least length each needs.
STRONG_SECRETS = {
    "jwt_secret": MIN_SECRET_LENGTH,
    "job_token": MIN_TOKEN_LENGTH,
    "metrics_token": MIN_TOKEN_LENGTH,
    "backup_key": MIN_TOKEN_LENGTH,
    "alert_webhook_secret": MIN_TOKEN_LENGTH,
}
# How evenly a secret uses its characters: the Shannon entropy of its characters over that of 16 equally used ones
# (hex's alphabet; fewer when the secret is shorter), capped at 1. Random tokens, hex or urlsafe, of 16+ characters
# score 0.6-1; "x" * 40 scores 0 and "test-secret-" + "x" * 40 about 0.3: below MIN_VARIETY a secret is mostly
# a few characters repeated.
MIN_VARIETY = 0.45
GENERATE = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"


def configuration_checks(settings: Settings) -> list[Check]:
    """Every check that reads only the settings and the environment."""
    return [
        _environment(settings),
        _problems(settings),
        *_secret_strength(settings),
        _secret_files(settings),
        _metrics(settings),
        _rate_limits(settings),
        _signup(settings),
        _log_level(settings),
        _forwarded(settings),
        _demo(settings),
    ]


def _environment(settings: Settings) -> Check:
    if settings.is_prod:
        return passed("settings.environment", "ENVIRONMENT=prod: weak or default secrets are refused at start")
    return warned(
        "settings.environment",
        "ENVIRONMENT=dev: weak secrets are accepted and a JWT secret is generated on disk",
        "set ENVIRONMENT=prod on a production deployment",
    )


def _problems(settings: Settings) -> Check:
    found = settings.problems()
    if not found:
        return passed("settings.problems", "no unsafe setting (what `gatehouse serve` refuses to start with)")
    first, *rest = found
    more = f" (and {len(rest)} more: {'; '.join(rest)})" if rest else ""
    return failed("settings.problems", first + more, "fix each setting named; `gatehouse serve` refuses to start")


def variety(value: str) -> float:
    """The Shannon entropy per character of `value`, over the most its length allows (0: one character repeated)."""
    counts = Counter(value)
    per_char = -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())
    most = math.log2(min(len(value), 16))
    return min(1.0, per_char / most) if most else 0.0


def weakness(value: str, min_length: int) -> str | None:
    """Why a secret is weak (placeholder, short, one repeated character, low variety), or None."""
    if value.lower() in PLACEHOLDER_SECRETS:
        return "is a placeholder value"
    if len(set(value)) == 1:
        return "is one character repeated"
    if len(value) < min_length:
        return f"is {len(value)} characters (at least {min_length})"
    if variety(value) < MIN_VARIETY:
        return "has little variety (a few characters, much repeated): it is not random"
    return None


def _secret_strength(settings: Settings) -> list[Check]:
    checks: list[Check] = []
    for field, min_length in STRONG_SECRETS.items():
        name = field.upper()
        value = getattr(settings, field).get_secret_value()
        check = f"secret.{field}"
        if not value:
            checks.append(skipped(check, f"{name} is not set"))
            continue
        problem = weakness(value, min_length)
        if problem is None:
            checks.append(passed(check, f"{name} looks random ({len(value)} characters)"))
            continue
        fix = f"set {name} (or {name}_FILE) to a new random value, e.g. `{GENERATE}`"
        summary = f"{name} {problem}"
        checks.append(failed(check, summary, fix) if settings.is_prod else warned(check, summary, fix))
    return checks


def secret_fields() -> list[str]:
    """Every setting that holds a secret (the SecretStr ones), by its environment name."""
    return [name.upper() for name, field in Settings.model_fields.items() if field.annotation is SecretStr]


def _secret_files(settings: Settings) -> Check:
    inline = [name for name in secret_fields() if os.environ.get(name) and not os.environ.get(f"{name}_FILE")]
    if not inline:
        return passed("settings.secret_files", "no secret is given inline in the environment")
    summary = f"secrets given inline in the environment: {', '.join(inline)}"
    fix = f"mount each as a file and set {inline[0]}_FILE (and so on) instead: environments leak into dumps and ps"
    return (
        warned("settings.secret_files", summary, fix) if settings.is_prod else skipped("settings.secret_files", summary)
    )


def _metrics(settings: Settings) -> Check:
    if settings.metrics_token.get_secret_value():
        return passed("metrics", "METRICS_TOKEN is set: Prometheus scrapes /metrics with it")
    summary = "METRICS_TOKEN is not set: /metrics needs a monitor's API key (a person's key in the scrape config)"
    fix = "set METRICS_TOKEN (or METRICS_TOKEN_FILE) and give Prometheus `authorization: {credentials_file: ...}`"
    return warned("metrics", summary, fix) if settings.is_prod else skipped("metrics", summary)


def _rate_limits(settings: Settings) -> Check:
    off = [
        name
        for name, value in (
            ("RATE_LIMIT_PER_MINUTE", settings.rate_limit_per_minute),
            ("RATE_LIMIT_IP_PER_MINUTE", settings.rate_limit_ip_per_minute),
        )
        if not value
    ]
    if not off:
        return passed(
            "settings.rate_limits",
            f"rate limits on: {settings.rate_limit_per_minute}/min per key, "
            f"{settings.rate_limit_ip_per_minute}/min per IP",
        )
    summary = f"rate limits disabled: {', '.join(off)}"
    fix = f"set {off[0]} to a limit that fits your SLOs (the default is 60 per key, 30 per IP)"
    return (
        warned("settings.rate_limits", summary, fix) if settings.is_prod else skipped("settings.rate_limits", summary)
    )


def _signup(settings: Settings) -> Check:
    if settings.signup_mode is SignupMode.OPEN and settings.is_prod:
        return warned(
            "settings.signup",
            "SIGNUP_MODE=open: anyone who reaches the server can make an account",
            "set SIGNUP_MODE=invite",
        )
    return passed("settings.signup", f"SIGNUP_MODE={settings.signup_mode.value}")


def _log_level(settings: Settings) -> Check:
    if settings.log_level == "DEBUG" and settings.is_prod:
        return warned(
            "settings.log_level",
            "LOG_LEVEL=DEBUG in prod: verbose, slower logs",
            "set LOG_LEVEL=INFO (turn DEBUG on for an hour only when debugging)",
        )
    return passed("settings.log_level", f"LOG_LEVEL={settings.log_level}")


def _forwarded(settings: Settings) -> Check:
    allowed = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
    if "*" in [part.strip() for part in allowed.split(",")]:
        return warned(
            "settings.forwarded_ips",
            "FORWARDED_ALLOW_IPS='*': any client can forge X-Forwarded-For (its IP rate limit and audit address)",
            "set FORWARDED_ALLOW_IPS to your reverse proxies' addresses",
        )
    return passed("settings.forwarded_ips", f"X-Forwarded-For trusted from {allowed}")


def _demo(settings: Settings) -> Check:
    if settings.demo_upstream and settings.is_prod:
        return warned("settings.demo", "DEMO_UPSTREAM=true in prod: the demo models are served", "unset DEMO_UPSTREAM")
    return passed("settings.demo", "the demo upstream is not forced on")
