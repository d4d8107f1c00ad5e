"""The proxy's ASGI app in-process (no Ray): built-in endpoints, route matching, and how each
failure of the request path becomes a status code."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable

import httpx
import pytest

from serve_nb.config import HTTPOptions
from serve_nb.core.snapshots import ROUTES_KEY
from serve_nb.data.http.proxy import ProxyApp
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
        self.reply: Callable[[Request], AsyncIterator[list[dict]]] = self._echo

    async def _echo(self, request: Request) -> AsyncIterator[list[dict]]:
        scope, _, _ = request.args
        yield text_reply(f"{self.target}:{scope['path']}")

    @property
    def calls(self) -> list[tuple[str, str, bytes]]:
        return [(r.args[0]["path"], r.args[0]["root_path"], r.args[1]) for r in self.requests]

    async def stream(self, request: Request) -> AsyncIterator[list[dict]]:
        self.requests.append(request)
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


def test_healthz_is_503_until_routes_arrive_then_200():
    async def scenario():
        client = FakeClient()
        app = ProxyApp(client, HTTPOptions())
        before = await get(app, "/-/healthz")
        client.longpoll.callbacks[ROUTES_KEY]({"/a": ("app-a", "Ingress")})
        after = await get(app, "/-/healthz")
        return before, after

    before, after = run(scenario())
    assert before.status_code == 503
    assert (after.status_code, after.text) == (200, "success")


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
    scope, body, debug_errors = request.args
    assert request.kind is RequestKind.HTTP and request.streams
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
        (ReplicaUnavailableError("replica died"), 502, "Bad Gateway: replica died"),
        (RuntimeError("secret detail"), 500, "Internal Server Error: RuntimeError"),
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


def test_websocket_upgrade_is_closed_before_accept():
    async def scenario() -> list[dict]:
        app, _ = make_app()
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        async def receive() -> dict:
            return {"type": "websocket.connect"}

        await app({"type": "websocket", "path": "/a", "headers": []}, receive, send)
        return sent

    (message,) = run(scenario())
    # uvicorn answers a close before accept with HTTP 403.
    assert message["type"] == "websocket.close" and message["code"] == 1008


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
