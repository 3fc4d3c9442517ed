"""Run the fake upstream: ``python -m tests.support.fake_upstream`` or ``python tests/support/fake_upstream``."""

import sys
from pathlib import Path

if not __package__:
    # Run as a folder, Python put the folder itself first on sys.path; the repository root goes there
    # instead, so the package imports as itself and its modules shadow no top-level name.
    sys.path[0] = str(Path(__file__).resolve().parents[3])

from tests.support.fake_upstream.process import main

if __name__ == "__main__":
    sys.exit(main())
