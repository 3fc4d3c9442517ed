"""uvicorn's HTTP protocol with coalesced writes: what a response writes within one turn of the event loop goes
to the socket in one system call.

uvicorn writes a response's status line and headers as soon as the app sends `http.response.start`, and the
body in a second write; a streamed answer writes every chunk on its own. A profile of the gateway put about
an eighth of its CPU per request in those socket writes (a loopback write wakes the reader: it is far from
free on a virtual machine). Writes are now gathered and flushed at the end of the loop turn (`call_soon`), so
headers and body leave together, and chunks that are ready together leave together. Nothing waits longer
than that turn: no timer, no Nagle-style delay.

It also bounds a request's head (request line and headers), which httptools alone does not.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gatehouse.errors import GatehouseError, error_body, error_style


class CoalescingTransport(asyncio.Transport):
    """A transport whose writes are buffered until the end of the current loop turn."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._pending.append(bytes(data))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if self._transport.is_closing():
            return
        self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(p) for p in self._pending)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()


class HeadersTooLarge(GatehouseError):
    """The request line and headers exceed 64 KiB: send fewer or shorter headers."""

    status = 431
    type = "invalid_request_error"
    code = "request_headers_too_large"


# httptools keeps reading a request's head for as long as it lasts (a 20 MB header was taken whole): cut it
# here, as h11 (16 KiB) and nginx (32 KiB by default) do, with room for large cookies and tokens.
MAX_HEAD_BYTES = 64 * 1024


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a CoalescingTransport (`uvicorn.run(http=...)`), refusing a request head
    over MAX_HEAD_BYTES with a 431 in the caller's protocol before reading more of it."""

    _head_done = False
    _head_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not registered as an asyncio.Transport, but is one.
        super().connection_made(CoalescingTransport(cast(asyncio.Transport, transport), self.loop))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_done = False
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._head_done = True
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # refused: the rest of its head is not read
        super().data_received(data)
        if self._head_done or self.transport.is_closing():
            return
        # Everything fed so far went into a head not yet complete.
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse_head()

    def _refuse_head(self) -> None:
        error = HeadersTooLarge(HeadersTooLarge.__doc__ or "")
        path = self.url.split(b"?", 1)[0][:200].decode("latin-1", "replace")
        body = orjson.dumps(error_body(error, style=error_style(path)))
        head = b"".join(
            [
                STATUS_LINE[error.status],
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n\r\n",
            ]
        )
        self.transport.write(head + body)
        self.transport.close()
