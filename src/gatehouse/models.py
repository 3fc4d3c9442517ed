"""Every table, imported in one place so that Base.metadata knows them all (for Alembic and the tests)."""

from gatehouse.accounts.access import models as access_models
from gatehouse.accounts.invites import models as invite_models
from gatehouse.alerts import models as alerts_models
from gatehouse.audit import models as audit_models
from gatehouse.auth import models as auth_models
from gatehouse.blocklist import models as blocklist_models
from gatehouse.db.base import Base
from gatehouse.gateway import models as gateway_models
from gatehouse.gateway.stored import models as stored_models
from gatehouse.jobs import models as jobs_models
from gatehouse.limits import models as limits_models
from gatehouse.monitoring import models as monitoring_models
from gatehouse.upstreams import models as upstreams_models

__all__ = [
    "Base",
    "access_models",
    "alerts_models",
    "audit_models",
    "auth_models",
    "blocklist_models",
    "gateway_models",
    "invite_models",
    "jobs_models",
    "limits_models",
    "monitoring_models",
    "stored_models",
    "upstreams_models",
]
