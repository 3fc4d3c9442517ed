"""Per-request cost of the IP blocklist in the request middleware (core/middleware.py, blocklist/matcher.py),
measured in-process: the lookup alone, and a whole pass through the middleware around an empty app, with no list,
an empty list, and lists of 10 to 100,000 entries over several prefix lengths (IPv4 and IPv6).

    uv run python bench/blocklist.py [--calls N] [--rounds R]

Prints a markdown table of the best round (the least disturbed by other work on the machine) in microseconds per
call.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gatehouse.blocklist.matcher import Blocklist
from gatehouse.core.middleware import RequestContextMiddleware

SIZES = (10, 1_000, 100_000)
PREFIXES_V4 = (32, 32, 32, 24, 24, 16)  # mostly single addresses, some /24s and /16s
PREFIXES_V6 = (128, 64, 48)


def entries(count: int, seed: int = 7) -> list[tuple[str, None]]:
    """`count` distinct networks, a tenth of them IPv6, none containing 192.0.2.1 or 2001:db8::1."""
    rng = random.Random(seed)
    found: set[str] = set()
    while len(found) < count:
        if rng.random() < 0.1:
            prefix = rng.choice(PREFIXES_V6)
            address = ipaddress.IPv6Address(rng.getrandbits(128) | (0x2A00 << 112))
            network = ipaddress.IPv6Network(f"{address}/{prefix}", strict=False)
        else:
            prefix = rng.choice(PREFIXES_V4)
            address = ipaddress.IPv4Address(rng.randrange(0x0B000000, 0xC0000000))  # 11.0.0.0 - 191.255.255.255
            network = ipaddress.IPv4Network(f"{address}/{prefix}", strict=False)
        found.add(str(network))
    return [(network, None) for network in found]


def lookup_us(blocklist: Blocklist, host: str, calls: int) -> float:
    blocks = blocklist.blocks
    started = time.perf_counter()
    for _ in range(calls):
        blocks(host)
    return (time.perf_counter() - started) / calls * 1e6


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def middleware_us(blocklist: Blocklist | None, host: str, calls: int) -> float:
    """One GET through the middleware (request id, access log line, metrics, the blocklist) around an empty app."""
    middleware = RequestContextMiddleware(_app, max_body_bytes=1 << 20, blocklist=blocklist)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    started = time.perf_counter()
    for _ in range(calls):
        scope = {"type": "http", "method": "GET", "path": "/v1/models", "headers": [], "client": (host, 5000)}
        await middleware(scope, receive, send)
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import logging

    from gatehouse.core.logging import configure_logging
    from gatehouse.settings import Settings

    # The access log goes nowhere (WARNING): what is timed is the middleware, not the terminal.
    configure_logging(Settings(_env_file=None, log_level="WARNING"))  # type: ignore[call-arg]
    logging.disable(logging.INFO)

    rows: list[tuple[str, float, float, float]] = []
    cases: list[tuple[str, Blocklist | None, str]] = [
        ("no blocklist", None, "192.0.2.1"),
        ("empty", Blocklist(), "192.0.2.1"),
    ]
    for size in SIZES:
        listed = Blocklist()
        listed.replace(entries(size))
        cases.append((f"{size:,} entries, IPv4 client not listed", listed, "192.0.2.1"))
        cases.append((f"{size:,} entries, IPv6 client not listed", listed, "2001:db8::1"))
        hit = next(n for n, _ in entries(size) if ":" not in n)
        cases.append((f"{size:,} entries, IPv4 client listed", listed, str(ipaddress.ip_network(hit)[-1])))
    for name, blocklist, host in cases:
        lookups, passes = [], []
        for _ in range(args.rounds):
            lookups.append(lookup_us(blocklist, host, args.calls) if blocklist is not None else 0.0)
            passes.append(asyncio.run(middleware_us(blocklist, host, args.calls // 4)))
        groups = len(blocklist._v4) + len(blocklist._v6) if blocklist is not None else 0
        rows.append((name, min(lookups), min(passes), groups))
    print("| case | prefix lengths | lookup (µs) | middleware pass (µs) |")
    print("| --- | ---: | ---: | ---: |")
    for name, lookup, passed, groups in rows:
        print(f"| {name} | {int(groups)} | {lookup:.2f} | {passed:.2f} |")


if __name__ == "__main__":
    main()
