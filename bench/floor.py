"""The floor: the least a Python gateway on this stack can cost, for comparison in `make bench`.

    python bench/floor.py --port P --upstream http://127.0.0.1:U

A pure ASGI app under uvicorn (uvloop, httptools), one worker, that forwards each POST to the upstream with
one shared aiohttp session and relays the answer (streamed chunk by chunk when the upstream streams). No
authentication, no quotas, no logs, no metrics, no request parsing: nothing Gatehouse does beyond moving
bytes. Gatehouse's cost over direct, minus this relay's, is what its features cost; this relay's cost over
direct is what the server and client libraries cost before any feature.
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class Relay:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    connector = aiohttp.TCPConnector(limit=2000, limit_per_host=2000)
                    self.session = aiohttp.ClientSession(connector=connector)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self.session is not None:
                        await self.session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"] in ("/health", "/readyz"):
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope["headers"]
            if k.decode("latin-1").lower() not in HOP_BY_HOP
        }
        assert self.session is not None
        async with self.session.request(
            scope["method"], self.upstream + scope["path"], data=b"".join(chunks), headers=headers
        ) as response:
            out = [
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in response.headers.items()
                if k.lower() not in HOP_BY_HOP
            ]
            await send({"type": "http.response.start", "status": response.status, "headers": out})
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvicorn.run(
        Relay(args.upstream),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
