"""Identifiers for requests and streams: random hex, unique in practice, not secrets.

`uuid.uuid4()` reads the kernel's random source on every call, a system call each (two per gateway request,
a measurable share of its CPU on a virtual machine). These ids are labels for logs and for an operator's
terminate call (which checks the operator's role, not knowledge of the id), so a seeded PRNG is enough.
"""

from __future__ import annotations

import os
import random

_random = random.Random()  # seeded from the OS once, at import; reseeded in each forked worker below


def new_id(length: int = 32) -> str:
    """`length` hex characters (at most 32), e.g. `9f3c2a7e1b...`."""
    return f"{_random.getrandbits(128):032x}"[:length]


def _reseed() -> None:
    _random.seed()


os.register_at_fork(after_in_child=_reseed)  # forked workers must not repeat each other's ids
