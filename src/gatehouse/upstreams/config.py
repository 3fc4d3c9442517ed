"""Upstream configuration: the GATEHOUSE_CONFIG YAML file plus the OLLAMA_/OPENAI_BASE_URL shortcuts."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gatehouse.fields import PriceAmount
from gatehouse.settings import Settings

MAX_MODEL_NAME = 200  # model_price.model


class UpstreamKind(StrEnum):
    OLLAMA = "ollama"
    OPENAI = "openai"  # any OpenAI-compatible server: vLLM, llama.cpp, LM Studio, OpenRouter, OpenAI
    ANTHROPIC = "anthropic"  # Anthropic's API, or any server of its Messages API
    DEMO = "demo"


class UpstreamConfig(BaseModel):
    """One upstream server."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")
    kind: UpstreamKind
    base_url: str = ""
    api_key: str = ""
    api_key_env: str = ""
    # A file holding the key (a mounted secret): read when the file is loaded, so `gatehouse reload` rotates it.
    api_key_file: str = ""
    models: list[str] = Field(default_factory=list, description="Served models; discovered when empty.")
    discover: bool = True
    headers: dict[str, str] = Field(default_factory=dict)
    connect_timeout: float | None = Field(default=None, gt=0)
    read_timeout: float | None = Field(default=None, gt=0)
    max_connections: int = Field(default=256, ge=1, le=10_000)
    responses: bool = Field(
        default=False,
        description="An openai upstream that serves /v1/responses itself: Responses requests pass through to it.",
    )
    anthropic_version: str = Field(
        default="2023-06-01",
        min_length=1,
        max_length=40,
        description="The anthropic-version header sent to an anthropic upstream.",
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _needs_url(self) -> UpstreamConfig:
        if self.kind is not UpstreamKind.DEMO and not self.base_url:
            raise ValueError(f"upstream {self.name!r} needs a base_url")
        # OpenAI's own convention puts /v1 in the base URL (https://api.openai.com/v1); Gatehouse adds the
        # /v1/... paths itself, so either spelling works.
        if self.kind in (UpstreamKind.OPENAI, UpstreamKind.ANTHROPIC) and self.base_url.endswith("/v1"):
            self.base_url = self.base_url.removesuffix("/v1")
        return self

    def credential_problem(self) -> str | None:
        """Credentials given twice, which no request could carry: checked where a configuration is written (the
        file, the API), not on rows already stored, so a stored one never stops a start."""
        given = [name for name in ("api_key", "api_key_env", "api_key_file") if getattr(self, name)]
        if len(given) > 1:
            return f"give one of {' and '.join(given)}, not several"
        authorization = any(header.lower() == "authorization" for header in self.headers)
        if urlsplit(self.base_url).username is not None and (given or authorization):
            # Basic credentials in the URL and a key: HTTP clients refuse to send both Authorization headers.
            return (
                "base_url carries credentials (user:password@) and a key or Authorization header is set too: keep one"
            )
        return None

    def resolved_api_key(self) -> str:
        """The key, from the file (api_key_file was read into api_key when the file was loaded) or from the named
        environment variable."""
        return self.api_key or (os.environ.get(self.api_key_env, "") if self.api_key_env else "")


class ModelAlias(BaseModel):
    """A model name clients use, served by an upstream model (several targets: failover order)."""

    model_config = ConfigDict(extra="forbid")

    upstream: str
    model: str
    max_output_tokens: int | None = Field(
        default=None,
        ge=1,
        description="The most tokens the model can produce: what a request that names no max_tokens reserves.",
    )


class PriceConfig(BaseModel):
    """A model's (or `*` pattern's) price per million tokens, in PRICE_CURRENCY (limits/prices/config.py applies
    it when it differs from the last price the file applied)."""

    model_config = ConfigDict(extra="forbid")

    input: PriceAmount
    output: PriceAmount
    cached_input: PriceAmount | None = None  # default: input
    currency: str | None = None  # must be PRICE_CURRENCY when given


class GatewayConfig(BaseModel):
    """The whole YAML file."""

    model_config = ConfigDict(extra="forbid")

    upstreams: list[UpstreamConfig] = Field(default_factory=list)
    models: dict[str, ModelAlias | list[ModelAlias]] = Field(default_factory=dict)
    prices: dict[str, PriceConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> GatewayConfig:
        names = [u.name for u in self.upstreams]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"upstream names must be unique; repeated: {', '.join(sorted(duplicates))}")
        for alias, targets in self.models.items():
            for target in targets if isinstance(targets, list) else [targets]:
                if target.upstream not in names:
                    raise ValueError(f"model {alias!r} points at unknown upstream {target.upstream!r}")
        for model in self.prices:
            if not model or model != model.strip() or len(model) > MAX_MODEL_NAME:
                raise ValueError(f"prices: {model!r} is not a model name or `*` pattern (1 to 200 characters)")
        return self


class ConfigError(ValueError):
    """The upstream configuration is wrong; the message names the file and the field."""


def load_config(settings: Settings) -> GatewayConfig:
    """Read GATEHOUSE_CONFIG (if set) and add the env shortcuts (the demo is the registry's business)."""
    config = GatewayConfig()
    if settings.gatehouse_config is not None:
        config = _read_yaml(settings.gatehouse_config)
        for model, price in config.prices.items():
            if price.currency is not None and price.currency.strip().upper() != settings.price_currency:
                raise ConfigError(
                    f"GATEHOUSE_CONFIG={settings.gatehouse_config}: prices.{model}.currency: {price.currency!r} is "
                    f"not PRICE_CURRENCY ({settings.price_currency}); Gatehouse has no exchange rates"
                )
    existing = {u.name for u in config.upstreams}
    extra: list[UpstreamConfig] = []
    if settings.ollama_base_url and "ollama" not in existing:
        extra.append(
            UpstreamConfig(
                name="ollama",
                kind=UpstreamKind.OLLAMA,
                base_url=settings.ollama_base_url,
                api_key=settings.ollama_api_key.get_secret_value(),
            )
        )
    if settings.openai_base_url and "openai" not in existing:
        extra.append(
            UpstreamConfig(
                name="openai",
                kind=UpstreamKind.OPENAI,
                base_url=settings.openai_base_url,
                api_key=settings.openai_api_key.get_secret_value(),
            )
        )
    if settings.anthropic_base_url and "anthropic" not in existing:
        extra.append(
            UpstreamConfig(
                name="anthropic",
                kind=UpstreamKind.ANTHROPIC,
                base_url=settings.anthropic_base_url,
                api_key=settings.anthropic_api_key.get_secret_value(),
            )
        )
    return GatewayConfig(upstreams=[*config.upstreams, *extra], models=config.models, prices=config.prices)


DEMO_UPSTREAM = UpstreamConfig(name="demo", kind=UpstreamKind.DEMO)


def demo_wanted(settings: Settings, others: int) -> bool:
    """Serve the built-in demo? DEMO_UPSTREAM when set, else only while no other upstream exists."""
    return settings.demo_upstream if settings.demo_upstream is not None else others == 0


def _read_yaml(path: Path) -> GatewayConfig:
    try:
        raw: Any = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"GATEHOUSE_CONFIG={path}: cannot read the file ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"GATEHOUSE_CONFIG={path}: not valid YAML: {_yaml_problem(exc)}") from exc
    try:
        config = GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"GATEHOUSE_CONFIG={path}: {problems}") from exc
    for upstream in config.upstreams:
        if problem := upstream.credential_problem():
            raise ConfigError(f"GATEHOUSE_CONFIG={path}: upstreams.{upstream.name}: {problem}")
    return config.model_copy(update={"upstreams": [_with_key_file(path, u) for u in config.upstreams]})


def _with_key_file(path: Path, upstream: UpstreamConfig) -> UpstreamConfig:
    """The upstream with its api_key_file read into api_key: a rotated file then shows as a changed upstream."""
    if not upstream.api_key_file:
        return upstream
    try:
        key = Path(upstream.api_key_file).read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"GATEHOUSE_CONFIG={path}: upstreams.{upstream.name}.api_key_file: cannot read "
            f"{upstream.api_key_file} ({exc.strerror})"
        ) from exc
    if not key:
        raise ConfigError(
            f"GATEHOUSE_CONFIG={path}: upstreams.{upstream.name}.api_key_file: {upstream.api_key_file} is empty"
        )
    return upstream.model_copy(update={"api_key": key})


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where, without the excerpt of the file PyYAML quotes: that line may hold an api_key, and the
    message reaches the audit log and POST /admin/reload's answer."""
    problem = getattr(exc, "problem", None) or "it cannot be parsed"
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else str(problem)
