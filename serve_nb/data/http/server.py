"""uvicorn's server, observable and guarded against hostile clients.

``ObservedServer`` lets the proxy await startup instead of polling ``started``. ``GuardedHttpToolsProtocol``
adds what uvicorn does not enforce: httptools accepts headers of any size and number, and nothing
times out a client that trickles its headers (uvicorn's keep-alive timer only runs between requests
and is cancelled by every byte received). httptools is chosen deliberately over h11: it is uvicorn's
fast parser (h11 is pure Python and answers oversized headers with a bare 400).
"""

from __future__ import annotations

import asyncio
import functools
import socket
from dataclasses import dataclass
from typing import Any, Callable

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serve_nb.http_options import HTTPOptions

#: Status lines of the answers sent before any ASGI app sees the request.
_STATUS_LINES = {408: b"HTTP/1.1 408 Request Timeout\r\n", 431: b"HTTP/1.1 431 Request Header Fields Too Large\r\n"}


@dataclass(frozen=True)
class HeaderLimits:
    """What one request may send before its body; ``None`` is no limit."""

    max_bytes: int | None
    max_count: int | None
    timeout_s: float | None

    @classmethod
    def from_options(cls, options: HTTPOptions) -> "HeaderLimits":
        return cls(options.max_header_bytes, options.max_header_count, options.header_timeout_s)


class _HeaderLimitExceeded(Exception):
    """Raised inside a parser callback; httptools wraps it and uvicorn then calls ``send_400_response``."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header size, header count and header-read-time limits.

    The per-request cost is two integer additions and comparisons per header and one timer per request.
    """

    def __init__(self, *args: Any, limits: HeaderLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._header_bytes = 0
        self._header_count = 0
        self._rejection: tuple[int, str] | None = None
        self._header_timer: asyncio.TimerHandle | None = None

    # ---------------------------------------------------------------- header-read timeout

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()  # a client that connects and sends nothing is timed out too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._limits.timeout_s is not None and self._header_timer is None:
            self._header_timer = self.loop.call_later(self._limits.timeout_s, self._on_header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        self._reject(408, f"Request headers not received within {self._limits.timeout_s}s.")

    # ---------------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._header_count = 0
        self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        limit = self._limits.max_count
        if limit is not None and self._header_count > limit:
            self._rejection = (431, f"More than {limit} request headers.")
            raise _HeaderLimitExceeded
        self._count_bytes(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        """uvicorn appends each piece of a body to a bytearray and its ``receive`` copies that into bytes:
        two copies of every byte. Started as ``b""`` instead, ``b"" + piece`` is the piece itself and
        ``bytes(piece)`` too, so a piece read alone (the usual case: uvicorn stops reading past 64 KiB
        until the app receives) reaches the app uncopied; pieces read together are joined once."""
        if not self.cycle.body:
            self.cycle.body = b""  # type: ignore[assignment]
        super().on_body(body)

    def _count_bytes(self, n: int) -> None:
        self._header_bytes += n
        limit = self._limits.max_bytes
        if limit is not None and self._header_bytes > limit:
            self._rejection = (431, f"Request line and headers exceed {limit} bytes.")
            raise _HeaderLimitExceeded

    # ---------------------------------------------------------------- answers

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error; a limit we raised in a callback answers with its own status."""
        if self._rejection is not None:
            status, text = self._rejection
            self._reject(status, text)
        else:
            super().send_400_response(msg)

    def _reject(self, status: int, text: str) -> None:
        """Answer before any app ran, and close: the rest of what the client sends is never read."""
        self._cancel_header_timer()
        if self.transport is None or self.transport.is_closing():
            return
        body = text.encode()
        self.transport.write(
            _STATUS_LINES[status]
            + b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        self.transport.close()


#: uvicorn's keep-alive pings on an open WebSocket: a client that has not answered one within the timeout is
#: dropped, so a dead or hostile peer cannot hold its socket (and its replica slot) for ever.
WS_PING_INTERVAL_S = 20.0
WS_PING_TIMEOUT_S = 20.0


def proxy_config(app: Any, options: HTTPOptions) -> uvicorn.Config:
    """How the proxy's uvicorn serves ``app``: the guarded HTTP protocol, and for WebSockets uvicorn's
    ``websockets`` (sans-I/O) protocol with a message at most ``max_body_bytes`` (larger: close 1009),
    like an HTTP body, and keep-alive pings."""
    return uvicorn.Config(
        app, lifespan="off", log_level="warning", access_log=False,
        http=guarded_protocol(HeaderLimits.from_options(options)),  # type: ignore[arg-type]
        timeout_keep_alive=options.keep_alive_timeout_s,  # type: ignore[arg-type]  # call_later takes floats
        limit_concurrency=options.max_connections, server_header=False, date_header=False,
        ws="websockets-sansio", ws_max_size=options.max_body_bytes,  # type: ignore[arg-type]  # None: no limit
        ws_ping_interval=WS_PING_INTERVAL_S, ws_ping_timeout=WS_PING_TIMEOUT_S,
    )


def guarded_protocol(limits: HeaderLimits) -> Callable[..., GuardedHttpToolsProtocol]:
    """The protocol factory uvicorn's ``Config(http=...)`` calls with ``config``, ``server_state``, ``app_state``."""
    return functools.partial(GuardedHttpToolsProtocol, limits=limits)


class ObservedServer(uvicorn.Server):
    """``started_event`` is set once uvicorn listens (it stays unset if startup fails)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.started_event = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.started_event.set()
