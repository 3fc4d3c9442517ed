"""Field types shared by every domain's request schemas and routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator

MAX_DB_INT = 2**31 - 1  # INTEGER on SQLite and PostgreSQL alike (int4); larger ids cannot exist


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL: refused here, a 422 naming the field, not a 500 at the INSERT.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# A client-supplied string that may reach the database.
Text = Annotated[str, AfterValidator(_no_nul)]

# A database id in a path: out of range is a 422 naming the parameter, not an overflow in the driver.
IdPath = Annotated[int, Path(ge=1, le=MAX_DB_INT)]
