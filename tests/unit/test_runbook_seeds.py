"""docs/runbook-seeds.md stays true: the RUNBOOK sections, API routes and repository files it names exist.

Its `gatehouse ...` commands are checked with README's and RUNBOOK's in test_docs.
"""

from __future__ import annotations

import re
from pathlib import Path

from gatehouse.app import create_app
from tests.conftest import make_settings
from tests.integration.test_permissions import endpoints

ROOT = Path(__file__).resolve().parents[2]
SEEDS_DOC = (ROOT / "docs" / "runbook-seeds.md").read_text()
RUNBOOK = (ROOT / "RUNBOOK.md").read_text()
SEED_RUNBOOKS = ("000", "001", "002", "003", "004")
COLUMNS = 4  # seed step | Gatehouse | RUNBOOK | better than the seed


def _cells(line: str) -> list[str]:
    # No cell of the map holds a `|`, so a plain split is exact.
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _rows_by_seed() -> dict[str, list[list[str]]]:
    rows: dict[str, list[list[str]]] = {}
    seed = None
    for line in SEEDS_DOC.splitlines():
        heading = re.match(r"^## (\d{3}):", line)
        if heading:
            seed = heading.group(1)
            rows[seed] = []
        elif line.startswith("## "):
            seed = None
        elif seed and line.startswith("| ") and not line.startswith("| seed step") and not line.startswith("| ---"):
            rows[seed].append(_cells(line))
    return rows


def test_every_seed_runbook_has_its_table_of_complete_rows() -> None:
    rows = _rows_by_seed()
    assert sorted(rows) == list(SEED_RUNBOOKS)
    for seed, seed_rows in rows.items():
        assert len(seed_rows) >= 10, f"seed {seed}: only {len(seed_rows)} procedures mapped"
        for cells in seed_rows:
            assert len(cells) == COLUMNS, f"seed {seed}: a row with {len(cells)} cells: {cells[0]}"
            step, gatehouse, section, _better = cells
            assert step and gatehouse and section, f"seed {seed}: an empty cell in {step!r}"
    assert "## No Gatehouse equivalent" in SEEDS_DOC


def test_every_runbook_section_named_exists() -> None:
    headings = set(re.findall(r"^#{2,3} (.+?)\s*$", RUNBOOK, flags=re.M))
    named = {name for rows in _rows_by_seed().values() for cells in rows for name in re.findall(r'"([^"]+)"', cells[2])}
    named |= set(re.findall(r'RUNBOOK\s+"([^"]+)"', SEEDS_DOC))
    assert len(named) > 20
    assert sorted(named - headings) == [], "these RUNBOOK sections no longer exist: point the rows at the new headings"


def _route_pattern(template: str) -> re.Pattern[str]:
    """A path template's pattern: each placeholder matches a placeholder or one path segment."""
    parts = re.split(r"\{[^}]+\}", template)
    return re.compile(r"(?:\{[^}/]+\}|[^/{}]+)".join(re.escape(part) for part in parts))


def test_every_api_route_named_is_served() -> None:
    app = create_app(make_settings("sqlite+aiosqlite:///:memory:", ROOT / "data"))
    # A route named with a placeholder ({id}) or with a value in it (/admin/jobs/purge/run) matches its template.
    served = [(e.method, _route_pattern(e.path)) for e in endpoints(app)]
    named = {
        (method, path)
        for method, path in re.findall(
            r"\b(GET|POST|PUT|PATCH|DELETE) (/(?:admin|auth|me|v1|api|readyz|healthz|metrics)[^\s`?]*)", SEEDS_DOC
        )
    }
    # The seeds' own routes (/api/ops/..., /api/devices/...) are quoted in the first column, not served by Gatehouse.
    named = {
        (method, path)
        for method, path in named
        if not path.startswith(("/api/ops", "/api/mod", "/api/calls", "/api/cron", "/api/devices"))
    }
    assert len(named) > 20
    unknown = [(m, p) for m, p in named if not any(m == method and route.fullmatch(p) for method, route in served)]
    assert sorted(unknown) == [], "these routes are not Gatehouse's"


def test_every_repository_file_named_exists() -> None:
    paths = set(re.findall(r"`((?:deploy|scripts)/[A-Za-z0-9_./-]+?)/?`", SEEDS_DOC))
    paths |= set(
        re.findall(r"\b((?:deploy|scripts)/[A-Za-z0-9_-]+(?:/[A-Za-z0-9_.-]+)*\.(?:ya?ml|json|cfg|sh))\b", SEEDS_DOC)
    )
    assert len(paths) > 5
    # deploy/compose/secrets/ is the operator's: RUNBOOK "Deploying" has them make it, it is never committed.
    missing = [p for p in paths if not (ROOT / p).exists() and not p.startswith("deploy/compose/secrets")]
    assert sorted(missing) == []
