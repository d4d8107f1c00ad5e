"""What the proxy records of each HTTP request: its id (the client's ``X-Request-ID`` or a new one, returned
in the response either way), Ray Serve's proxy metrics, and one access line.

``Exchange`` stands between the proxy and uvicorn's ``send`` for one request: it reads the status the
response starts with and adds the ``x-request-id`` header, so every answer carries it, the replica's and
the proxy's own (404, 503, 413, 408) alike.
"""

from __future__ import annotations

import time

from serve_nb.core import metrics as m
from serve_nb.core.log_format import http_access_message
from serve_nb.data.context import new_request_id
from serve_nb.data.http.asgi import RESPONSE_START, Message, Send
from serve_nb.data.serve_log import ServeLog

REQUEST_ID_HEADER = b"x-request-id"
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

    async def send(self, message: Message) -> None:
        if message["type"] == RESPONSE_START:
            self.status = message["status"]
            message = {**message, "headers": [*message.get("headers", ()), self._id_header]}
        await self._send(message)


class ProxyObserver:
    """The proxy's metrics and access log. ``buffer`` None: metrics are off; ``log`` None: no access lines."""

    def __init__(self, node_id: str, node_ip: str, store: m.SeriesStore | None, log: ServeLog | None) -> None:
        self._node = (node_id, node_ip)
        self._store = store  # written from the proxy's loop only
        self._log = log
        self._ongoing = 0

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
            if status >= 400:
                store.inc((m.HTTP_ERRORS, (route, code, method, app)))
            store.observe((m.HTTP_LATENCY, (method, route, app, code)), latency_ms)
            store.gauges[(m.HTTP_ONGOING, self._node)] = self._ongoing
        if self._log is not None:
            self._log.access(exchange.request_id, exchange.route,
                             http_access_message(method, exchange.route or _shown(path), status, latency_ms),
                             "INFO" if status < 500 else "ERROR")

    def close(self) -> None:
        if self._log is not None:
            self._log.close()


def _shown(path: str) -> str:
    """An unmatched path in an access line: bounded and printable (it is the client's text)."""
    cut = "".join(c if c.isprintable() and c != " " else "?" for c in path[:100])
    return cut + ("..." if len(path) > 100 else "")


def proxy_log_file(node_ip: str) -> str:
    return f"proxy_{node_ip}.log"

