"""The HTTP proxy: uvicorn + an ASGI app, one actor per node.

It learns the route table from the controller's long-poll, matches the longest prefix, and forwards
each request to the ingress deployment over the channel. uvicorn runs on the process's background
loop, the same loop as the routers, so a request never hops threads inside the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import json
import logging
import socket
from typing import Any, Coroutine

from serve_nb.config import HTTPOptions
from serve_nb.http_options import SAFE_METHODS
from serve_nb.core.routing import RouteTable, root_path_for
from serve_nb.core.snapshots import LOGGING_KEY, ROUTES_KEY
from serve_nb.data.http import websocket
from serve_nb.data.http.asgi import RESPONSE_BODY, RESPONSE_START, Headers, Receive, Scope, Send
from serve_nb.data.http.body import BodyTooLarge, ClientBody, declared_length, read_head, watch_client
from serve_nb.core.log_format import LoggingConfig
from serve_nb.data.http.proxy_observer import (WEBSOCKET_METHOD, Exchange, ProxyObserver, SocketExchange, proxy_log_file,
                                               request_id_from)
from serve_nb.data.request import Request
from serve_nb.data.router import MAX_IDEMPOTENT_RETRIES
from serve_nb.exceptions import (BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError,
                                 port_in_use_message)
from serve_nb.types import DeploymentID

logger = logging.getLogger(__name__)

#: Connections the kernel queues before uvicorn accepts them: a load burst must not be refused.
LISTEN_BACKLOG = 2048

#: glibc's mallopt parameter number for the mmap threshold.
M_MMAP_THRESHOLD = -3
#: Blocks this large get their own mapping, unmapped when freed. Above asyncio's 256 KiB buffer for every
#: socket read (a syscall pair per read would cost every request); large bodies pass it quickly.
MMAP_THRESHOLD_BYTES = 2**20

#: What the ingress sees of the client's scope (uvicorn's extensions and state stay here).
_SCOPE_KEYS = ("type", "asgi", "http_version", "method", "scheme", "path", "raw_path", "query_string", "headers", "client", "server")


async def _plain(send: Send, status: int, text: str, headers: Headers | None = None) -> None:
    body = text.encode()
    await send({
        "type": RESPONSE_START,
        "status": status,
        "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
        + (headers or []),
    })
    await send({"type": RESPONSE_BODY, "body": body})


#: The 404 text: fixed and short, so a long unknown path is never echoed back (or amplified).
#: The most of an unknown path a 404 repeats: enough to see a typo, never an amplified copy of a long path.
NOT_FOUND_PATH_CHARS = 100
#: The header naming a request's multiplexed model (Ray Serve's name), and the longest id accepted from it.
MODEL_ID_HEADER = b"serve_multiplexed_model_id"
MAX_MODEL_ID_CHARS = 256


def model_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The multiplexed model the client asked for with ``serve_multiplexed_model_id``; "" if none. Names
    arrive lowercased (ASGI). ValueError if too long: the id reaches the replica, its loader and its logs."""
    for name, value in headers:
        if name == MODEL_ID_HEADER:
            if len(value) > MAX_MODEL_ID_CHARS:
                raise ValueError(f"The serve_multiplexed_model_id header is longer than {MAX_MODEL_ID_CHARS} characters.")
            return value.decode("latin-1").strip()
    return ""


def not_found_text(path: str) -> str:
    """Ray Serve's 404 wording, which clients may match on, with the path cut to ``NOT_FOUND_PATH_CHARS``
    and characters that do not print replaced, so it stays short and one line."""
    shown = "".join(c if c.isprintable() else "?" for c in path[:NOT_FOUND_PATH_CHARS])
    if len(path) > NOT_FOUND_PATH_CHARS:
        shown += "..."
    return f"Path '{shown}' not found. Ping http://.../-/routes for available routes."


def _error_header(why: str) -> Headers:
    """Why a request failed, for whoever looks (the body stays Ray Serve's plain text); one bounded line."""
    line = " ".join(why.split())[:300]
    return [(b"x-serve-nb-error", line.encode("ascii", "replace"))]


#: ``/-/healthz`` before any route exists: Ray Serve's words, which health checks may match on.
NO_ROUTES_TEXT = "Route table is not populated yet."

#: Sent with answers given before the body was read: closing is the only way not to read it.
_CLOSE: Headers = [(b"connection", b"close")]


async def _too_large(send: Send, limit: int | None) -> None:
    """413, closing the connection: the rest of the body is never read."""
    await _plain(send, 413, f"Payload Too Large: the limit is {limit} bytes.", _CLOSE)


class ProxyApp:
    """The ASGI app uvicorn serves. ``client`` is the process's ServeClient (routers, long-poll)."""

    def __init__(self, client: Any, options: HTTPOptions, observer: ProxyObserver | None = None) -> None:
        self._client = client
        self._options = options
        self._observer = observer or ProxyObserver("", "", None, None)
        self._routes: RouteTable[tuple[str, str]] = RouteTable({})
        self.routes_known = asyncio.Event()
        self._route_waiters: list[asyncio.Future[None]] = []
        self._had_routes = False
        self._logging_changed = asyncio.Event()  # replaced by a fresh one at each change
        client.longpoll.subscribe(ROUTES_KEY, self._on_routes)
        client.longpoll.subscribe(LOGGING_KEY, self._on_logging)

    def _on_logging(self, config: LoggingConfig | None) -> None:
        self._observer.configure_logging(config or LoggingConfig())
        self._logging_changed.set()
        self._logging_changed = asyncio.Event()

    async def wait_for_logging(self, config: LoggingConfig, timeout_s: float) -> bool:
        """True once the access lines are written as ``config`` says (it comes through the long-poll)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._observer.logging_config != config:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._logging_changed.wait(), remaining)
            except asyncio.TimeoutError:
                return False
        return True

    def _on_routes(self, routes: dict[str, tuple[str, str]] | None) -> None:
        self._routes = RouteTable(routes or {})
        self._had_routes = self._had_routes or bool(routes)
        self.routes_known.set()
        for fut in self._route_waiters:
            if not fut.done():
                fut.set_result(None)
        self._route_waiters.clear()

    async def wait_for_route(self, prefix: str, app: str, timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._routes.as_dict().get(prefix, (None,))[0] != app:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            fut = loop.create_future()
            self._route_waiters.append(fut)
            try:
                await asyncio.wait_for(fut, remaining)
            except asyncio.TimeoutError:
                return False
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One request, recorded: its id, its metrics, its access line."""
        exchange = Exchange(send, request_id_from(scope["headers"]))
        start = self._observer.started()
        try:
            await self._route_http(scope, receive, exchange)
        finally:
            self._observer.finished(exchange, scope["method"], scope["path"], start)

    async def _route_http(self, scope: Scope, receive: Receive, exchange: Exchange) -> None:
        send = exchange.send
        path = scope["path"]
        if path.startswith("/-/"):
            await self._builtin(path, send)
            return
        match = self._routes.match(path)
        if match is None:
            await _plain(send, 404, not_found_text(path))
            return
        prefix, (app, ingress) = match
        exchange.route, exchange.app = prefix, app
        try:
            model_id = model_id_from(scope["headers"])
        except ValueError as exc:
            await _plain(send, 400, str(exc))
            return
        limit = self._options.max_body_bytes
        if limit is not None and (declared_length(scope["headers"]) or 0) > limit:
            await _too_large(send, limit)
            return
        try:
            head = await read_head(receive, limit)
        except BodyTooLarge:
            await _too_large(send, limit)
            return
        if head is None:
            return
        inner = {k: scope[k] for k in _SCOPE_KEYS if k in scope}
        inner["root_path"] = root_path_for(prefix, self._options.root_path)
        inner["headers"] = list(scope["headers"])
        router = self._client.router(DeploymentID(app, ingress))
        request = Request.http(inner, head.data, self._options.debug_errors, head.more, model_id,
                               exchange.request_id, prefix)
        rest = ClientBody(receive, len(head.data), limit) if head.more else None
        retries = MAX_IDEMPOTENT_RETRIES if self._options.retry_safe_methods and scope["method"] in SAFE_METHODS else 0
        forward = asyncio.ensure_future(self._forward(router, request, rest, exchange, retries))
        watch = asyncio.ensure_future(watch_client(receive, rest))  # the client left, or its body failed
        try:
            done, _ = await asyncio.wait(
                {forward, watch}, timeout=self._options.request_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            if forward in done:
                forward.result()
                return
            # The client left, its body went over the limit, or the timeout passed: cancelling reaches the
            # replica, which cancels the user's work.
            forward.cancel()
            await asyncio.gather(forward, return_exceptions=True)
            if exchange.responded:
                return
            if not done:
                await _plain(send, 408, f"Request timed out after {self._options.request_timeout_s}s.")
            elif isinstance(watch.result(), BodyTooLarge):
                await _too_large(send, limit)
        finally:
            watch.cancel()

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One WebSocket, recorded as a request (method ``WS``) from handshake to close."""
        exchange = SocketExchange(send, receive, request_id_from(scope["headers"]))
        start = self._observer.started()
        try:
            await self._route_websocket(scope, exchange)
        finally:
            self._observer.finished(exchange, WEBSOCKET_METHOD, scope["path"], start)

    async def _route_websocket(self, scope: Scope, exchange: SocketExchange) -> None:
        """A WebSocket goes to its route's ingress as one long request (``websocket``); one with no route,
        or a built-in path, is refused before the handshake (uvicorn answers 403)."""
        receive, send = exchange.receive, exchange.send
        path = scope["path"]
        match = None if path.startswith("/-/") else self._routes.match(path)
        if match is None:
            await websocket.refuse(send)
            return
        prefix, (app, ingress) = match
        exchange.route, exchange.app = prefix, app
        try:
            model_id = model_id_from(scope["headers"])
        except ValueError:
            await websocket.refuse(send)
            return
        inner = websocket.ingress_scope(scope, root_path_for(prefix, self._options.root_path))
        router = self._client.router(DeploymentID(app, ingress))
        await websocket.forward_websocket(router, inner, receive, send, self._options, model_id,
                                          exchange.request_id, prefix)

    async def _forward(
        self, router: Any, request: Request, rest: ClientBody | None, exchange: Exchange, retries: int,
    ) -> None:
        """Send the replica's ASGI messages on as they are (``exchange.responded`` once a response began).
        ``rest``: the body still to stream, if large. ``retries``: how often to send the request again if its
        replica dies before the response starts (and before a streamed body started to flow)."""
        send, raw_send = exchange.send, exchange.raw_send  # raw: straight to uvicorn, no coroutine between
        try:
            # aclosing: when the client leaves (this task is cancelled) the router's slot is freed and the
            # replica told to stop at once; an abandoned generator would do both only when collected.
            replies = router.stream(request, rest, retries=retries, no_replica_timeout_s=self._options.no_replica_timeout_s)
            async with contextlib.aclosing(replies):
                async for messages in replies:
                    for message in messages:
                        if message["type"] == RESPONSE_START:
                            message = exchange.start(message)
                        await raw_send(message)
        except asyncio.CancelledError:
            raise
        except (DeploymentUnavailableError, BackPressureError) as exc:
            if not exchange.responded:
                await _plain(send, 503, f"Service Unavailable: {exc}")
        except ReplicaUnavailableError as exc:
            # Ray Serve answers a replica that died under a request with a plain 500; the reason goes in a header.
            if not exchange.responded:
                await _plain(send, 500, "Internal Server Error", _error_header(f"replica unavailable: {exc}"))
        except Exception as exc:  # noqa: BLE001
            logger.exception("serve_nb proxy: request to %s failed", request.args[0].get("path"))
            if not exchange.responded:
                await _plain(send, 500, "Internal Server Error", _error_header(f"{type(exc).__name__} in the proxy"))

    async def _builtin(self, path: str, send: Send) -> None:
        if path == "/-/routes":
            table = {prefix: app for prefix, (app, _) in sorted(self._routes.as_dict().items())}
            body = json.dumps(table).encode()
            await send({"type": RESPONSE_START, "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": RESPONSE_BODY, "body": body})
        elif path == "/-/healthz":
            # As Ray Serve's: not ready until a route has been served (load balancers wait for that); ready
            # for good from then on, so an app deleted and redeployed does not take the node out.
            if self._had_routes:
                await _plain(send, 200, "success")
            else:
                await _plain(send, 503, NO_ROUTES_TEXT)
        else:
            await _plain(send, 404, not_found_text(path))


def return_freed_memory() -> None:
    """Give freed large buffers back to the OS, so the proxy's memory returns to its baseline after big bodies.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), after which
    request bodies are carved from the heap and stay with the process when freed. Fixing the
    threshold keeps every block of ``MMAP_THRESHOLD_BYTES`` or more in its own mapping, unmapped on
    free. Only the proxy's process is affected; elsewhere than glibc this does nothing.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass


def bind_socket(host: str, port: int, reuse_port: bool = True) -> socket.socket:
    """Bind the proxy's listening socket; ``reuse_port`` (where the platform has SO_REUSEPORT) lets the
    proxies of several Ray nodes on one machine share it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port and hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OSError(exc.errno, port_in_use_message(host, port)) from None
        raise
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


async def _on_app_loop(work: Coroutine[Any, Any, bool]) -> bool:
    """Run ``work`` on the loop the proxy app serves from (the process client's background loop)."""
    from serve_nb.data.client import current_client

    client = current_client()
    assert client is not None
    return await asyncio.wrap_future(client.bg.submit(work))


class ProxyActor:
    """The Ray actor: starts uvicorn on the process's background loop and reports readiness."""

    def __init__(self, options: HTTPOptions, node_id: str, controller: Any, info: Any) -> None:
        self._options = options
        self._node_id = node_id
        self._controller = controller
        self._info = info
        self._server: Any = None
        self._app: ProxyApp | None = None

    async def start(self) -> str | None:
        """Bind and serve; returns an error message instead of raising (e.g. the port is taken)."""
        from serve_nb.data.client import install_client

        client = install_client(self._controller, self._info)
        try:
            sock = bind_socket(self._options.host, self._options.port, self._options.reuse_port)
        except OSError as exc:
            return exc.strerror or str(exc)
        return await asyncio.wrap_future(client.bg.submit(self._serve(client, sock)))

    async def _serve(self, client: Any, sock: socket.socket) -> str | None:
        from serve_nb.data.http.server import ObservedServer, proxy_config  # only in proxies

        return_freed_memory()
        self._app = ProxyApp(client, self._options, self._new_observer())
        self._server = server = ObservedServer(proxy_config(self._app, self._options))
        task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        started = asyncio.ensure_future(server.started_event.wait())
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        if not server.started:
            started.cancel()
            exc = task.exception() if not task.cancelled() else None
            return f"The HTTP server stopped while starting: {exc!r}"
        await self._app.routes_known.wait()
        return None

    def _new_observer(self) -> ProxyObserver:
        import ray

        from serve_nb import ray_private
        from serve_nb.core.log_format import Component, LineFields
        from serve_nb.data import metrics
        from serve_nb.data.serve_log import ServeLog, log_path

        node_ip = ray.util.get_node_ip_address()
        session_dir = ray_private.session_dir()

        def path_for(config: LoggingConfig) -> str | None:
            return log_path(config.logs_dir, session_dir, proxy_log_file(node_ip))

        config = LoggingConfig()  # until the controller's arrives, with the routes (before any request)
        log = ServeLog(LineFields(Component.PROXY, node_ip), config, path_for(config))
        return ProxyObserver(self._node_id, node_ip, metrics.store(), log, path_for)

    async def wait_for_route(self, prefix: str, app: str, timeout_s: float = 10.0) -> bool:
        if self._app is None:
            return False
        return await _on_app_loop(self._app.wait_for_route(prefix, app, timeout_s))

    async def wait_for_logging(self, config: LoggingConfig, timeout_s: float = 10.0) -> bool:
        if self._app is None:
            return False
        return await _on_app_loop(self._app.wait_for_logging(config, timeout_s))

    async def is_serving(self) -> bool:
        return self._server is not None and bool(self._server.started) and not self._server.should_exit

    async def shutdown(self) -> None:
        if self._server is not None:
            self._server.should_exit = True

    async def wait_for_death(self) -> None:
        await asyncio.Event().wait()
