"""Console pages: admin (see web/pages.py for how a page is declared)."""

from __future__ import annotations
