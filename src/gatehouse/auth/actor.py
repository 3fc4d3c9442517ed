"""Who acts, as the audit log records it: a user (through a console session or an API key), the system, a job,
or an anonymous caller."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from gatehouse.auth.principal import Principal


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: a user (through a console session or an API key), the system, or a job."""

    type: str
    user_id: int | None = None
    key_id: int | None = None
    label: str | None = None
    ip: str | None = None
    request_id: str | None = None

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(type="system", label=label)

    @classmethod
    def job(cls, name: str) -> Actor:
        return cls(type="job", label=name)


def client_ip(connection: HTTPConnection) -> str | None:
    """The caller's address (uvicorn resolves X-Forwarded-For from FORWARDED_ALLOW_IPS proxies)."""
    return connection.client.host if connection.client else None


def request_id_of(connection: HTTPConnection) -> str | None:
    """The request's id (set by the middleware)."""
    state = connection.scope.get("state") or {}
    found = state.get("request_id")
    return str(found) if found is not None else None


def actor_for(connection: HTTPConnection, principal: Principal | None) -> Actor:
    """Who is acting in this request, for the audit log."""
    request_id = request_id_of(connection)
    if principal is None:
        return Actor(type="anonymous", ip=client_ip(connection), request_id=request_id)
    return Actor(
        type="key" if principal.via_key else "user",
        user_id=principal.user_id,
        key_id=principal.key_id,
        label=principal.email,
        ip=client_ip(connection),
        request_id=request_id,
    )
