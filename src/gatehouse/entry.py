"""The `gatehouse` command's entry point (console script and `python -m gatehouse`).

Importing the CLI loads about a thousand modules and allocates millions of objects; the garbage collector
runs over and over meanwhile, about a tenth of the start-up time, and finds nothing to free. It is paused
for the import only.
"""

from __future__ import annotations

import gc


def main() -> None:
    """Run the `gatehouse` command."""
    gc.disable()
    try:
        from gatehouse.cli import app
    finally:
        gc.enable()
    app()
