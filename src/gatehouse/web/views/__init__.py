"""The console's pages, one module per area; importing this package registers them all (web/pages.py)."""

from gatehouse.web.views import admin, data, operate, you

__all__ = ["admin", "data", "operate", "you"]
