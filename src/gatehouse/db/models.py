"""Imports every domain's models so that Base.metadata knows all tables (for Alembic and tests)."""

from gatehouse.accounts import models as accounts_models
from gatehouse.db.base import Base
from gatehouse.gateway import models as gateway_models
from gatehouse.limits import models as limits_models

__all__ = ["Base", "accounts_models", "gateway_models", "limits_models"]
