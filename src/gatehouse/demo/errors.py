"""Demo data errors (docs/errors.md lists every code)."""

from __future__ import annotations

from gatehouse.errors import Conflict


class NotFresh(Conflict):
    """`gatehouse demo seed` on a database that holds more than the bootstrap administrator."""

    code = "demo_not_fresh"


class DemoInProduction(Conflict):
    """Demo data asked for where ENVIRONMENT=prod."""

    code = "demo_in_production"


class DemoExists(Conflict):
    """Demo data is there already: `gatehouse demo reset` replaces it."""

    code = "demo_exists"
