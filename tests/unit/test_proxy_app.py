"""The proxy's ASGI app in-process (no Ray): built-in endpoints, route matching, and how each
failure of the request path becomes a status code."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable

import httpx
import pytest

from serve_nb.config import HTTPOptions
from serve_nb.data.router import MAX_IDEMPOTENT_RETRIES
from serve_nb.http_options import DEFAULT_NO_REPLICA_TIMEOUT_S
from serve_nb.core.snapshots import ROUTES_KEY
from serve_nb.data.http.proxy import MAX_MODEL_ID_CHARS, ProxyApp
from serve_nb.data.http.server import HeaderLimits
from serve_nb.data.request import Request, RequestKind
from serve_nb.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError


class FakeLongPoll:
    def __init__(self) -> None:
        self.callbacks: dict[str, Callable[[Any], None]] = {}

    def subscribe(self, key: str, callback: Callable[[Any], None]) -> None:
        self.callbacks[key] = callback


def text_reply(text: str, status: int = 200) -> list[dict]:
    return [
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]},
        {"type": "http.response.body", "body": text.encode()},
    ]


class FakeRouter:
    """Answers every request with ``reply(request)``'s batches of ASGI messages (or its exception)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.requests: list[Request] = []
        self.policies: list[dict[str, Any]] = []  # the keywords each stream() got (retries, no-replica bound)
        self.streamed: list[list[bytes]] = []  # the pieces of each streamed body
        self.reply: Callable[[Request], AsyncIterator[list[dict]]] = self._echo

    async def _echo(self, request: Request) -> AsyncIterator[list[dict]]:
        scope = request.args[0]
        yield text_reply(f"{self.target}:{scope['path']}")

    @property
    def calls(self) -> list[tuple[str, str, bytes]]:
        return [(r.args[0]["path"], r.args[0]["root_path"], r.args[1]) for r in self.requests]

    async def stream(self, request: Request, body: Any = None, **policy: Any) -> AsyncIterator[list[dict]]:
        self.requests.append(request)
        self.policies.append(policy)
        if body is not None:  # as the replica would: read the streamed rest of a large body
            self.streamed.append([piece async for piece in body])
        async for batch in self.reply(request):
            yield batch


class FakeClient:
    def __init__(self) -> None:
        self.longpoll = FakeLongPoll()
        self.routers: dict[Any, FakeRouter] = {}

    def router(self, dep: Any) -> FakeRouter:
        return self.routers.setdefault(dep, FakeRouter(f"{dep.app}/{dep.name}"))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def get(app: ProxyApp, path: str, **kw: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(kw.pop("method", "GET"), path, **kw)


def make_app(**options: Any) -> tuple[ProxyApp, FakeClient]:
    client = FakeClient()
    app = ProxyApp(client, HTTPOptions(**options))
    client.longpoll.callbacks[ROUTES_KEY]({"/a": ("a", "A")})
    return app, client


def router_of(client: FakeClient) -> FakeRouter:
    from serve_nb.types import DeploymentID

    return client.router(DeploymentID("a", "A"))


def test_healthz_is_503_until_a_route_exists_then_200_for_good():
    async def scenario():
        client = FakeClient()
        app = ProxyApp(client, HTTPOptions())
        answers = [await get(app, "/-/healthz")]
        client.longpoll.callbacks[ROUTES_KEY]({})  # the controller's table, still empty
        answers.append(await get(app, "/-/healthz"))
        client.longpoll.callbacks[ROUTES_KEY]({"/a": ("app-a", "Ingress")})
        answers.append(await get(app, "/-/healthz"))
        client.longpoll.callbacks[ROUTES_KEY]({})  # the app deleted: still a healthy proxy
        answers.append(await get(app, "/-/healthz"))
        return [(a.status_code, a.text) for a in answers]

    not_yet = (503, "Route table is not populated yet.")
    assert run(scenario()) == [not_yet, not_yet, (200, "success"), (200, "success")]


def test_routes_endpoint_and_longest_prefix_forwarding():
    async def scenario():
        app, client = make_app()
        client.longpoll.callbacks[ROUTES_KEY]({"/": ("root", "R"), "/a": ("a", "A"), "/a/b": ("ab", "AB")})
        routes = await get(app, "/-/routes")
        hits = [await get(app, p, method="POST", content=b"body") for p in ("/a/b/c", "/a", "/ab", "/")]
        return routes, hits, client

    routes, hits, client = run(scenario())
    assert routes.json() == {"/": "root", "/a": "a", "/a/b": "ab"}
    assert [h.text for h in hits] == ["ab/AB:/a/b/c", "a/A:/a", "root/R:/ab", "root/R:/"]
    calls = {dep.app: r.calls for dep, r in client.routers.items()}
    assert calls["ab"] == [("/a/b/c", "/a/b", b"body")]
    assert calls["root"][0][1] == ""  # the root prefix gives an empty root_path


def test_the_forwarded_request_is_an_http_request_not_a_method_name():
    app, client = make_app(debug_errors=True)
    run(get(app, "/a/x?q=1", method="PUT", content=b"payload", headers={"x-custom": "yes"}))
    (request,) = router_of(client).requests
    scope, body, debug_errors, more = request.args
    assert request.kind is RequestKind.HTTP and request.streams and more is False  # a small body goes whole
    assert (scope["method"], scope["path"], scope["query_string"], body, debug_errors) == ("PUT", "/a/x", b"q=1", b"payload", True)
    assert (b"x-custom", b"yes") in scope["headers"]


def test_unknown_path_404_names_the_routes_endpoint():
    async def scenario():
        app, _ = make_app()
        return await get(app, "/zzz"), await get(app, "/-/nothing")

    missing, builtin_missing = run(scenario())
    assert missing.status_code == 404 and "/-/routes" in missing.text
    assert builtin_missing.status_code == 404


@pytest.mark.parametrize("prefix", ["/svc"])
def test_root_path_includes_configured_base(prefix):
    async def scenario():
        client = FakeClient()
        app = ProxyApp(client, HTTPOptions(root_path="/base"))
        client.longpoll.callbacks[ROUTES_KEY]({prefix: ("svc", "S")})
        await get(app, f"{prefix}/x")
        return client

    client = run(scenario())
    (router,) = client.routers.values()
    assert router.calls[0][1] == "/base/svc"


def test_asgi_messages_reach_the_client_as_the_replica_sent_them():
    async def reply(request: Request) -> AsyncIterator[list[dict]]:
        yield [{"type": "http.response.start", "status": 201, "headers": [(b"x-a", b"1"), (b"x-a", b"2")]},
               {"type": "http.response.body", "body": b"part1-", "more_body": True}]
        yield [{"type": "http.response.body", "body": b"part2", "more_body": False}]

    app, client = make_app()
    router_of(client).reply = reply
    response = run(get(app, "/a"))
    assert (response.status_code, response.text) == (201, "part1-part2")
    assert response.headers.get_list("x-a") == ["1", "2"]


@pytest.mark.parametrize(
    ("error", "status", "text"),
    [
        (DeploymentUnavailableError("no replicas"), 503, "Service Unavailable: no replicas"),
        (BackPressureError("A", 2, 2), 503, "Service Unavailable: "),
        (ReplicaUnavailableError("replica died"), 500, "Internal Server Error"),
        (RuntimeError("secret detail"), 500, "Internal Server Error"),
    ],
)
def test_failures_before_the_response_become_status_codes(error, status, text):
    async def reply(request: Request) -> AsyncIterator[list[dict]]:
        raise error
        yield  # pragma: no cover - makes this a generator

    app, client = make_app()
    router_of(client).reply = reply
    response = run(get(app, "/a"))
    assert response.status_code == status
    assert response.text.startswith(text)
    assert "secret detail" not in response.text  # a 500 body stays short


def test_request_timeout_answers_408_and_cancels_the_forwarded_request():
    cancelled = []

    async def reply(request: Request) -> AsyncIterator[list[dict]]:
        try:
            await asyncio.Event().wait()  # the replica never answers
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        yield []  # pragma: no cover

    app, client = make_app(request_timeout_s=0.01)
    router_of(client).reply = reply
    response = run(get(app, "/a"))
    assert response.status_code == 408 and "timed out after 0.01s" in response.text
    assert cancelled == [True]


def test_client_disconnect_cancels_the_replicas_work_and_sends_nothing():
    async def scenario() -> tuple[list[dict], bool]:
        app, client = make_app()
        replica_started, replica_cancelled = asyncio.Event(), asyncio.Event()

        async def reply(request: Request) -> AsyncIterator[list[dict]]:
            replica_started.set()
            try:
                await asyncio.Event().wait()
            finally:
                replica_cancelled.set()
            yield []  # pragma: no cover

        router_of(client).reply = reply
        incoming = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> dict:
            if incoming:
                return incoming.pop()
            await replica_started.wait()
            return {"type": "http.disconnect"}  # the client hangs up while the replica works

        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": "/a", "headers": [], "query_string": b""}
        await app(scope, receive, send)
        return sent, replica_cancelled.is_set()

    sent, cancelled = run(scenario())
    assert cancelled and sent == []


def run_websocket(app: ProxyApp, scope: dict, incoming: list[dict]) -> list[dict]:
    """Run one WebSocket scope through the proxy's app: ``incoming`` is what uvicorn's receive gives (then
    nothing more); returns what the app sent uvicorn."""
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        if incoming:
            return incoming.pop(0)
        await asyncio.Event().wait()  # the client stays connected and silent
        return {}

    async def scenario() -> list[dict]:
        await app({"headers": [], "query_string": b"", **scope}, receive, send)
        return sent

    return run(scenario())


@pytest.mark.parametrize("path", ["/nothing-here", "/-/routes"])
def test_a_websocket_to_no_route_or_a_builtin_path_is_closed_before_accept(path):
    app, client = make_app()
    client.longpoll.callbacks[ROUTES_KEY]({"/a": ("a", "A")})
    (message,) = run_websocket(app, {"type": "websocket", "path": path}, [{"type": "websocket.connect"}])
    # uvicorn answers a close before accept with HTTP 403.
    assert message["type"] == "websocket.close"
    assert router_of(client).requests == []


def test_a_websocket_is_forwarded_as_one_websocket_request_and_the_apps_messages_go_back_in_order():
    app, client = make_app(debug_errors=True)
    router = router_of(client)

    async def reply(request: Request) -> AsyncIterator[list[dict]]:
        yield [{"type": "websocket.accept", "subprotocol": "chat"}, {"type": "websocket.send", "text": "hi"}]
        yield [{"type": "websocket.close", "code": 4000, "reason": "done"}]

    router.reply = reply
    router.stream = lambda request, body=None, **policy: (router.requests.append(request), reply(request))[1]
    scope = {"type": "websocket", "path": "/a/ws", "subprotocols": ["chat"], "state": {"uvicorn": "private"},
             "extensions": {"websocket.http.response": {}}, "headers": [(b"serve_multiplexed_model_id", b"m1")]}
    sent = run_websocket(app, scope, [{"type": "websocket.connect"}])
    (request,) = router.requests
    # The accept carries the request id, as every HTTP answer does.
    assert sent == [{"type": "websocket.accept", "subprotocol": "chat",
                     "headers": [(b"x-request-id", request.request_id.encode())]},
                    {"type": "websocket.send", "text": "hi"}, {"type": "websocket.close", "code": 4000, "reason": "done"}]
    forwarded, debug_errors, rest = request.args
    assert request.kind is RequestKind.WEBSOCKET and request.body_follows and rest is True and debug_errors
    assert request.model_id == "m1"
    assert (forwarded["path"], forwarded["root_path"], forwarded["subprotocols"]) == ("/a/ws", "/a", ["chat"])
    assert "state" not in forwarded and forwarded["extensions"] == {"websocket.http.response": {}}


@pytest.mark.parametrize("error, status", [(BackPressureError("A", 1, 1), 503),
                                           (DeploymentUnavailableError("gone"), 503),
                                           (ReplicaUnavailableError("died"), 500)])
def test_a_websocket_whose_request_fails_before_the_handshake_gets_the_http_status_a_request_would(error, status):
    app, client = make_app()
    router = router_of(client)

    async def fail(request: Request) -> AsyncIterator[list[dict]]:
        raise error
        yield []

    router.stream = lambda request, body=None, **policy: fail(request)
    scope = {"type": "websocket", "path": "/a", "extensions": {"websocket.http.response": {}}}
    start, body = run_websocket(app, scope, [{"type": "websocket.connect"}])
    assert (start["type"], start["status"]) == ("websocket.http.response.start", status)
    assert body["type"] == "websocket.http.response.body" and not body.get("more_body")


def test_a_websocket_not_answered_within_the_request_timeout_gets_408():
    app, client = make_app(request_timeout_s=0.05)
    router = router_of(client)
    cancelled = []

    async def never(request: Request) -> AsyncIterator[list[dict]]:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.append(True)
        yield []

    router.stream = lambda request, body=None, **policy: never(request)
    scope = {"type": "websocket", "path": "/a", "extensions": {"websocket.http.response": {}}}
    start, _ = run_websocket(app, scope, [{"type": "websocket.connect"}])
    assert start["status"] == 408 and cancelled == [True]


def test_lifespan_events_are_acknowledged():
    async def scenario() -> list[dict]:
        app, _ = make_app()
        incoming = [{"type": "lifespan.shutdown"}, {"type": "lifespan.startup"}]
        sent: list[dict] = []

        async def receive() -> dict:
            return incoming.pop()

        async def send(message: dict) -> None:
            sent.append(message)

        await app({"type": "lifespan"}, receive, send)
        return sent

    assert [m["type"] for m in run(scenario())] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_wait_for_route_returns_when_the_route_arrives_and_false_on_timeout():
    async def scenario() -> tuple[bool, bool]:
        app, client = make_app()
        waiting = asyncio.ensure_future(app.wait_for_route("/b", "b", timeout_s=30))
        while not app._route_waiters:  # until it waits for the route table to change
            await asyncio.sleep(0)
        client.longpoll.callbacks[ROUTES_KEY]({"/a": ("a", "A"), "/b": ("b", "B")})
        arrived = await waiting
        missing = await app.wait_for_route("/c", "c", timeout_s=0.01)
        return arrived, missing

    assert run(scenario()) == (True, False)


# --------------------------------------------------------------------------- limits against hostile clients


def test_unknown_path_404_says_so_in_ray_serves_words_and_repeats_at_most_100_characters():
    response = run(get(make_app()[0], "/nope"))
    assert (response.status_code, response.text) == (404, "Path '/nope' not found. Ping http://.../-/routes for available routes.")
    long_path = "/" + "x" * 10_000
    response = run(get(make_app()[0], long_path))
    assert response.status_code == 404
    assert response.text == f"Path '/{'x' * 99}...' not found. Ping http://.../-/routes for available routes."


def test_declared_body_over_the_limit_is_413_and_never_forwarded():
    app, client = make_app(max_body_bytes=10)
    response = run(get(app, "/a", method="POST", content=b"x" * 11))
    assert response.status_code == 413
    assert response.headers["connection"] == "close"  # the unread body is never read
    assert router_of(client).requests == []


async def _call_with_chunks(app: ProxyApp, chunks: list[bytes]) -> list[dict]:
    """Drive the ASGI app with a chunked (no Content-Length) body; returns what it sent."""
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else await asyncio.Event().wait()  # type: ignore[func-returns-value]

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/a", "raw_path": b"/a", "query_string": b"",
             "headers": [(b"transfer-encoding", b"chunked")], "http_version": "1.1", "scheme": "http"}
    await app(scope, receive, send)
    return sent


def test_chunked_body_growing_past_the_limit_is_413_and_never_forwarded():
    app, client = make_app(max_body_bytes=10)
    sent = run(_call_with_chunks(app, [b"x" * 6, b"x" * 6, b"x" * 6]))
    assert sent[0]["status"] == 413
    assert router_of(client).requests == []


def test_chunked_body_within_the_limit_arrives_whole_as_bytes_like():
    app, client = make_app(max_body_bytes=10)
    sent = run(_call_with_chunks(app, [b"ab", b"cd", b"ef"]))
    assert sent[0]["status"] == 200
    assert router_of(client).calls == [("/a", "/a", b"abcdef")]


def test_no_body_limit_when_max_body_bytes_is_none():
    app, client = make_app(max_body_bytes=None)
    assert run(get(app, "/a", method="POST", content=b"x" * 100_000)).status_code == 200
    assert len(router_of(client).calls[0][2]) == 100_000


@pytest.mark.parametrize(
    "kw",
    [{"max_body_bytes": 0}, {"max_header_bytes": -1}, {"max_header_count": 1.5}, {"max_connections": True},
     {"header_timeout_s": 0}, {"keep_alive_timeout_s": float("nan")}],
)
def test_limit_options_reject_values_that_are_not_positive(kw):
    with pytest.raises(ValueError, match=f"http_options {next(iter(kw))}"):
        HTTPOptions.from_user(kw)


def test_limit_options_have_defaults_and_none_turns_them_off():
    default = HTTPOptions()
    assert (default.max_body_bytes, default.max_header_bytes, default.max_header_count) == (100 * 2**20, 64 * 2**10, 100)
    assert (default.header_timeout_s, default.keep_alive_timeout_s, default.max_connections) == (10.0, 5.0, 10_000)
    off = HTTPOptions.from_user({k: None for k in ("max_body_bytes", "max_header_bytes", "max_header_count",
                                                   "header_timeout_s", "max_connections")})
    assert off.max_body_bytes is None and off.header_timeout_s is None


# --------------------------------------------------------------------------- header limits, over a real socket

#: Bounds every wait on the in-process server, so a broken limit fails the test instead of hanging it.
_WAIT_S = 5.0


async def _hello(scope: dict, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def _with_server(limits: HeaderLimits, client: Callable[[int], Any], app: Any = _hello) -> Any:
    """Serve ``app`` with the guarded protocol on a free loopback port; run ``client(port)``."""
    import uvicorn

    from serve_nb.data.http.proxy import bind_socket
    from serve_nb.data.http.server import ObservedServer, guarded_protocol

    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    protocol = guarded_protocol(limits)
    config = uvicorn.Config(app, http=protocol, lifespan="off", log_level="critical")  # type: ignore[arg-type]
    server = ObservedServer(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    await asyncio.wait_for(server.started_event.wait(), _WAIT_S)
    try:
        return await asyncio.wait_for(client(port), _WAIT_S)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, _WAIT_S)


async def _exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` and read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    try:
        return await reader.read(-1)
    finally:
        writer.close()


def _limits(**kw: Any) -> HeaderLimits:
    from serve_nb.data.http.server import HeaderLimits

    return HeaderLimits(**{"max_bytes": 1024, "max_count": 10, "timeout_s": 5.0, **kw})


def test_a_normal_request_passes_the_header_limits():
    request = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    reply = run(_with_server(_limits(), lambda port: _exchange(port, request)))
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"ok")


def test_a_body_reaches_the_app_whole_as_bytes_through_the_guarded_protocol():
    received: list[Any] = []

    async def collect(scope: dict, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            received.append(message["body"])
            if not message["more_body"]:
                break
        await _hello(scope, receive, send)

    body = bytes(range(256)) * 4096  # 1 MiB, read in several pieces

    async def post(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: %d\r\n\r\n" % len(body))
        for start in range(0, len(body), 100_000):
            writer.write(body[start : start + 100_000])
            await writer.drain()
        try:
            return await reader.read(-1)
        finally:
            writer.close()

    reply = run(_with_server(_limits(), post, collect))
    assert reply.startswith(b"HTTP/1.1 200") and b"".join(received) == body
    assert all(type(piece) is bytes for piece in received) and len(received) > 1


def test_headers_over_the_size_limit_are_431_and_closed():
    big = b"GET / HTTP/1.1\r\nx-big: " + b"a" * 2000 + b"\r\n\r\n"
    reply = run(_with_server(_limits(), lambda port: _exchange(port, big)))
    assert reply.startswith(b"HTTP/1.1 431 ") and b"connection: close" in reply


def test_more_headers_than_the_count_limit_are_431_and_closed():
    many = b"GET / HTTP/1.1\r\n" + b"".join(b"x-%d: 1\r\n" % i for i in range(11)) + b"\r\n"
    reply = run(_with_server(_limits(), lambda port: _exchange(port, many)))
    assert reply.startswith(b"HTTP/1.1 431 ")


def test_a_client_trickling_its_headers_gets_408_and_is_closed_after_the_header_timeout():
    async def slowloris(port: int) -> tuple[bytes, float]:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        start = loop.time()
        writer.write(b"GET / HTTP/1.1\r\nx-slow: ")
        reply = await reader.read(-1)  # the server ends it; the client never finishes its headers
        writer.close()
        return reply, loop.time() - start

    reply, elapsed = run(_with_server(_limits(timeout_s=0.3), slowloris))
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert 0.3 <= elapsed < 2.0


def test_the_header_timeout_also_covers_the_next_request_on_a_kept_alive_connection():
    async def second_request_stalls(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        first = await reader.readuntil(b"ok")
        writer.write(b"GET / HTTP/1.1\r\nx-slow: ")
        rest = await reader.read(-1)
        writer.close()
        return first + rest

    reply = run(_with_server(_limits(timeout_s=0.3), second_request_stalls))
    assert reply.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 408 " in reply


def test_only_safe_methods_are_sent_again_and_only_when_asked():
    async def scenario(**options: Any) -> dict[str, int]:
        app, client = make_app(**options)
        for method in ("GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE"):
            await get(app, "/a", method=method)
        router = router_of(client)
        return {r.args[0]["method"]: p["retries"] for r, p in zip(router.requests, router.policies)}

    assert set(run(scenario()).values()) == {0}, "off by default"
    assert run(scenario(retry_safe_methods=True)) == {
        "GET": MAX_IDEMPOTENT_RETRIES, "HEAD": MAX_IDEMPOTENT_RETRIES, "OPTIONS": MAX_IDEMPOTENT_RETRIES,
        "POST": 0, "PUT": 0, "DELETE": 0,
    }


def test_requests_wait_for_a_first_replica_only_as_long_as_no_replica_timeout_s():
    async def scenario(**options: Any) -> Any:
        app, client = make_app(**options)
        await get(app, "/a")
        return router_of(client).policies[0]["no_replica_timeout_s"]

    assert run(scenario()) == DEFAULT_NO_REPLICA_TIMEOUT_S
    assert run(scenario(no_replica_timeout_s=2.5)) == 2.5
    assert run(scenario(no_replica_timeout_s=None)) is None
    with pytest.raises(ValueError, match="no_replica_timeout_s must be a number > 0"):
        HTTPOptions(no_replica_timeout_s=0)
    with pytest.raises(ValueError, match="retry_safe_methods must be True or False"):
        HTTPOptions(retry_safe_methods="yes")


def test_the_multiplexed_model_header_reaches_the_replica_as_the_requests_model_id():
    app, client = make_app()
    run(get(app, "/a/x", headers={"serve_multiplexed_model_id": "fr-v2"}))
    run(get(app, "/a/x"))
    assert [r.model_id for r in router_of(client).requests] == ["fr-v2", ""]


def test_a_model_id_header_over_the_length_limit_is_400_and_never_forwarded():
    app, client = make_app()
    answer = run(get(app, "/a/x", headers={"serve_multiplexed_model_id": "m" * (MAX_MODEL_ID_CHARS + 1)}))
    assert answer.status_code == 400 and "serve_multiplexed_model_id" in answer.text
    assert router_of(client).requests == []
