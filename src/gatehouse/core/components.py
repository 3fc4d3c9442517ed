"""The process's long-lived objects (the database, the bus, the upstream registry...), found by their type.

The composition root (runtime.py) builds them at start and adds each here; a route asks for what it needs with
`Annotated[UpstreamRegistry, provided(UpstreamRegistry)]`. So no domain imports the composition root, and each
route names exactly what it uses.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

from fastapi import Depends
from starlette.requests import HTTPConnection

T = TypeVar("T")


class NotStarted(RuntimeError):
    """A component was asked for before the app's lifespan provided it (a bug, or a request during start-up)."""


class Components:
    """One object per type; `get` is a dictionary lookup (it runs on every request)."""

    def __init__(self) -> None:
        self._by_type: dict[type[Any], Any] = {}

    def add(self, value: T, kind: type[T] | None = None) -> T:
        """Provide `value` as its own type, or as `kind` (a base class or protocol it implements)."""
        self._by_type[kind or type(value)] = value
        return value

    def get(self, kind: type[T]) -> T:
        """The object provided as `kind`."""
        try:
            return cast(T, self._by_type[kind])
        except KeyError:
            raise NotStarted(f"{kind.__name__} is not provided: the app has not started (or not finished)") from None

    def clear(self) -> None:
        """Forget everything (at shutdown)."""
        self._by_type.clear()


def components_of(connection: HTTPConnection) -> Components:
    """The components of the app serving this request."""
    found: Components = connection.app.state.components
    return found


def provided(kind: type[T]) -> Any:
    """A dependency that hands a route the process's `kind`: `Annotated[Kind, provided(Kind)]`."""

    # async on purpose: FastAPI runs a plain `def` dependency in its thread pool, a thread hop for a dict lookup.
    async def dependency(connection: HTTPConnection) -> T:
        return components_of(connection).get(kind)

    dependency.__name__ = f"provided_{kind.__name__}"
    return Depends(cast(Callable[..., Coroutine[Any, Any, T]], dependency))
