"""Export errors (docs/errors.md lists every code)."""

from __future__ import annotations

from gatehouse.errors import Forbidden


class RawExportForbidden(Forbidden):
    """Unmasked (pii=raw) exports are for superadmins only, with a reason."""

    code = "raw_export_forbidden"
