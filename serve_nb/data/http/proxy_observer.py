"""What the proxy records of each HTTP request and WebSocket: its id (the client's ``X-Request-ID`` or a new
one, returned in the response either way), Ray Serve's proxy metrics, and one access line.

``Exchange`` stands between the proxy and uvicorn's ``send`` for one request: it reads the status the
response starts with and adds the ``x-request-id`` header, so every answer carries it, the replica's and
the proxy's own (404, 503, 413, 408) alike. ``SocketExchange`` does the same for a WebSocket, whose
status is, as in Ray Serve, its close code once accepted (1000 and 1001 are not errors) and the HTTP
status of a handshake answered otherwise; its method is ``WS``.
"""

from __future__ import annotations

import time
from typing import Callable

from serve_nb.core import metrics as m
from serve_nb.core.log_format import LoggingConfig, http_access_message
from serve_nb.data.context import new_request_id
from serve_nb.data.http.asgi import RESPONSE_START, Message, Receive, Send
from serve_nb.data.serve_log import ServeLog

REQUEST_ID_HEADER = b"x-request-id"
#: A WebSocket's method in metrics and access lines (Ray Serve's).
WEBSOCKET_METHOD = "WS"
#: Close codes of a WebSocket that ended well: normal closure and "going away".
CLEAN_CLOSE_CODES = frozenset({1000, 1001})
#: Close codes that mean the server failed (internal error, restart, try again later, bad gateway).
SERVER_CLOSE_CODES = frozenset({1011, 1012, 1013, 1014})
#: What a WebSocket that ended without a close code of its own is logged as (ASGI's "no status").
NO_CLOSE_CODE = 1005
#: The longest client-given request id kept; a longer one (or one with other than visible ASCII) is replaced.
MAX_REQUEST_ID_CHARS = 128


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-ID`` if it is a sane one, else a new id: it goes into logs and replies, so
    it is bounded and printable."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if 0 < len(value) <= MAX_REQUEST_ID_CHARS and all(33 <= c <= 126 for c in value):
                return value.decode("ascii")
            break
    return new_request_id()


class Exchange:
    """One request's ``send``: notes the status and the route, adds the request id to the response start."""

    __slots__ = ("_send", "request_id", "_id_header", "status", "route", "app")

    def __init__(self, send: Send, request_id: str) -> None:
        self._send = send
        self.request_id = request_id
        self._id_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        self.status = 0  # no response started
        self.route = ""
        self.app = ""

    @property
    def responded(self) -> bool:
        """Whether a response (or a WebSocket's answer) has begun: nothing else may be sent in its place."""
        return self.status != 0

    @property
    def failed(self) -> bool:
        """Counted in ``serve_num_http_error_requests``: an error status, or no answer at all."""
        return self.status >= 400 or self.status == 0

    @property
    def server_failed(self) -> bool:
        """Logged at ERROR: the server's fault, not the client's."""
        return self.status >= 500

    @property
    def raw_send(self) -> Send:
        """uvicorn's own ``send``: for messages already passed through ``start`` (or that start nothing)."""
        return self._send

    def start(self, message: Message) -> Message:
        """A response start as it goes out: its status noted, the request id added."""
        self.status = message["status"]
        return {**message, "headers": [*message.get("headers", ()), self._id_header]}

    async def send(self, message: Message) -> None:
        if message["type"] == RESPONSE_START:
            message = self.start(message)
        await self._send(message)


class SocketExchange(Exchange):
    """One WebSocket's ``send`` and ``receive``: notes how it ended (who closed it, with what code, or the
    HTTP status its handshake was answered with) and adds the request id to the accept."""

    __slots__ = ("_receive", "accepted", "_ended")

    def __init__(self, send: Send, receive: Receive, request_id: str) -> None:
        super().__init__(send, request_id)
        self._receive = receive
        self.accepted = False
        self._ended: int | None = None  # the close code of whoever closed first, the client or the app

    @property
    def failed(self) -> bool:
        if self.accepted:
            return self.status not in CLEAN_CLOSE_CODES
        return self.status >= 400 or self.status == 0

    @property
    def server_failed(self) -> bool:
        if self.accepted:
            return self.status in SERVER_CLOSE_CODES
        return self.status >= 500

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            self.accepted, self.status = True, self._ended or NO_CLOSE_CODE
            message = {**message, "headers": [*message.get("headers", ()), self._id_header]}
        elif kind == "websocket.close":
            if not self.accepted:
                self.status = self.status or 403  # closed before the handshake was answered: uvicorn answers 403
            elif self._ended is None:
                self._ended = self.status = message.get("code", 1000)
        elif kind == "websocket.http.response.start":
            self.status = message["status"]
            message = {**message, "headers": [*message.get("headers", ()), self._id_header]}
        await self._send(message)

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "websocket.disconnect" and self._ended is None:
            self._ended = message.get("code", NO_CLOSE_CODE)
            if self.accepted:
                self.status = self._ended
        return message


class ProxyObserver:
    """The proxy's metrics and access log. ``store`` None: metrics are off; ``log`` None: no access lines.
    ``log_path`` gives the log file for a logging config (its ``logs_dir``)."""

    def __init__(self, node_id: str, node_ip: str, store: m.SeriesStore | None, log: ServeLog | None,
                 log_path: Callable[[LoggingConfig], str | None] | None = None) -> None:
        self._node = (node_id, node_ip)
        self._store = store  # written from the proxy's loop only
        self._log = log
        self._log_path = log_path
        self.logging_config = log.config if log is not None else LoggingConfig()
        self._ongoing = 0

    def configure_logging(self, config: LoggingConfig) -> None:
        """The controller's logging config for proxies: applies from the next line."""
        if config != self.logging_config:
            self.logging_config = config
            if self._log is not None:
                self._log.configure(config, self._log_path(config) if self._log_path is not None else None)

    def started(self) -> float:
        self._ongoing += 1  # exported as the requests end (and so as they pile up under a burst)
        return time.perf_counter()

    def finished(self, exchange: Exchange, method: str, path: str, start: float) -> None:
        """``status`` 0 (the client left before any answer) is logged as 499, as proxies do."""
        latency_ms = (time.perf_counter() - start) * 1000
        self._ongoing -= 1
        status = exchange.status or 499
        store = self._store
        if store is not None:
            code, route, app = str(status), exchange.route, exchange.app
            store.inc((m.HTTP_REQUESTS, (route, method, app, code)))
            if exchange.failed:
                store.inc((m.HTTP_ERRORS, (route, code, method, app)))
            store.observe((m.HTTP_LATENCY, (method, route, app, code)), latency_ms)
            store.gauges[(m.HTTP_ONGOING, self._node)] = self._ongoing
        if self._log is not None:
            self._log.access(exchange.request_id, exchange.route,
                             http_access_message(method, exchange.route or _shown(path), status, latency_ms),
                             "ERROR" if exchange.server_failed else "INFO")

    def close(self) -> None:
        if self._log is not None:
            self._log.close()


def _shown(path: str) -> str:
    """An unmatched path in an access line: bounded and printable (it is the client's text)."""
    cut = "".join(c if c.isprintable() and c != " " else "?" for c in path[:100])
    return cut + ("..." if len(path) > 100 else "")


def proxy_log_file(node_ip: str) -> str:
    return f"proxy_{node_ip}.log"

