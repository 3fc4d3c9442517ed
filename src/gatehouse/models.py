"""Imports every domain's models so that Base.metadata knows all tables (for Alembic and tests)."""

from gatehouse.accounts import invite_models
from gatehouse.audit import models as audit_models
from gatehouse.auth import models as accounts_models
from gatehouse.db.base import Base
from gatehouse.gateway import models as gateway_models
from gatehouse.limits import models as limits_models
from gatehouse.ops import models as ops_models
from gatehouse.upstreams import models as upstreams_models

__all__ = [
    "Base",
    "accounts_models",
    "audit_models",
    "gateway_models",
    "invite_models",
    "limits_models",
    "ops_models",
    "upstreams_models",
]
