"""HTTP end to end in one process: the proxy's ASGI app, the request as it crosses the channel
(pickled), and the replica's HTTPAdapter running the user's code. No Ray, no sockets."""

from __future__ import annotations

import asyncio
import inspect
import pickle
from typing import Any, AsyncIterator, Callable

import httpx
import pytest
from starlette.requests import Request as StarletteRequest
from starlette.responses import StreamingResponse

from serve_nb.config import HTTPOptions
from serve_nb.core.snapshots import ROUTES_KEY
from serve_nb.data.http.proxy import ProxyApp
from serve_nb.data.http.replica_adapter import HTTPAdapter
from serve_nb.data.request import Request
from serve_nb.ingress import ingress


async def invoke(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    result = fn(*args, **kwargs)
    return await result if inspect.isawaitable(result) else result


class AdapterRouter:
    """Stands in for router + channel: the request and every batch go through pickle, as on the wire."""

    def __init__(self, adapter: HTTPAdapter) -> None:
        self.adapter = adapter
        self.batches: list[list[dict]] = []

    async def stream(self, request: Request, **_policy: Any) -> AsyncIterator[list[dict]]:
        request = Request.from_wire(pickle.loads(pickle.dumps(request.to_wire())))
        async for batch in self.adapter.handle(*request.args):
            batch = pickle.loads(pickle.dumps(batch))
            self.batches.append(batch)
            yield batch


class Client:
    def __init__(self, router: AdapterRouter) -> None:
        self._router = router
        self.longpoll = self

    def subscribe(self, key: str, callback: Callable[[Any], None]) -> None:
        assert key == ROUTES_KEY
        callback({"/app": ("app", "Ingress")})

    def router(self, dep: Any) -> AdapterRouter:
        return self._router


def serve(obj: Any, is_class: bool, *, debug_errors: bool = False) -> tuple[ProxyApp, AdapterRouter]:
    router = AdapterRouter(HTTPAdapter(obj, is_class, invoke, "Ingress"))
    return ProxyApp(Client(router), HTTPOptions(debug_errors=debug_errors)), router


async def request(app: ProxyApp, path: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.request(kw.pop("method", "GET"), path, **kw)


def test_a_function_gets_a_starlette_request_and_its_dict_becomes_json():
    async def handler(req: StarletteRequest) -> dict:
        return {"path": req.url.path, "root": req.scope["root_path"], "body": (await req.body()).decode(),
                "q": req.query_params["q"]}

    app, router = serve(handler, is_class=False)
    response = asyncio.run(request(app, "/app/x?q=1", method="POST", content=b"hi"))
    assert response.status_code == 200
    assert response.json() == {"path": "/app/x", "root": "/app", "body": "hi", "q": "1"}
    # Start and first body travel together: one frame for an ordinary response.
    assert [[m["type"] for m in b] for b in router.batches] == [["http.response.start", "http.response.body"]]


def test_a_streaming_response_streams_chunk_by_chunk():
    class Streamer:
        def __call__(self, req: StarletteRequest) -> StreamingResponse:
            async def chunks() -> AsyncIterator[bytes]:
                for i in range(3):
                    yield f"chunk{i};".encode()

            return StreamingResponse(chunks(), media_type="text/plain", status_code=206)

    app, router = serve(Streamer(), is_class=True)
    response = asyncio.run(request(app, "/app"))
    assert (response.status_code, response.text) == (206, "chunk0;chunk1;chunk2;")
    bodies = [m.get("body") for b in router.batches for m in b if m["type"] == "http.response.body"]
    assert bodies[:3] == [b"chunk0;", b"chunk1;", b"chunk2;"] and len(router.batches) >= 3


def test_a_failing_handler_gives_a_short_500_with_a_request_id():
    def handler(req: StarletteRequest) -> str:
        raise ValueError("the secret detail")

    app, _ = serve(handler, is_class=False)
    response = asyncio.run(request(app, "/app"))
    assert response.status_code == 500
    assert response.text.startswith("Internal Server Error: ValueError raised in deployment 'Ingress'")
    assert response.headers["x-request-id"] in response.text
    assert "secret detail" not in response.text


def test_debug_errors_adds_the_users_traceback():
    def handler(req: StarletteRequest) -> str:
        raise ValueError("the secret detail")

    app, _ = serve(handler, is_class=False, debug_errors=True)
    response = asyncio.run(request(app, "/app"))
    assert response.status_code == 500 and "ValueError: the secret detail" in response.text


def test_an_app_that_never_responds_gives_500():
    class Silent:
        async def __call__(self, req: StarletteRequest) -> Any:
            from starlette.responses import Response

            class NoResponse(Response):
                async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
                    return None

            return NoResponse()

    app, _ = serve(Silent(), is_class=True)
    response = asyncio.run(request(app, "/app"))
    assert response.status_code == 500 and "finished without sending a response" in response.text


def test_an_ingress_class_serves_its_fastapi_routes_with_self():
    fastapi = pytest.importorskip("fastapi")
    api = fastapi.FastAPI()

    @ingress(api)
    class Service:
        def __init__(self) -> None:
            self.greeting = "hello"

        @api.get("/greet/{name}")
        def greet(self, name: str) -> dict:
            return {"text": f"{self.greeting} {name}"}

    app, _ = serve(Service(), is_class=True)
    ok, missing = asyncio.run(_two(app, "/app/greet/ann", "/app/nothing"))
    assert (ok.status_code, ok.json()) == (200, {"text": "hello ann"})
    assert missing.status_code == 404


async def _two(app: ProxyApp, a: str, b: str) -> tuple[httpx.Response, httpx.Response]:
    return await request(app, a), await request(app, b)


def test_a_disconnect_cancels_the_users_handler():
    async def scenario() -> bool:
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def handler(req: StarletteRequest) -> str:
            started.set()
            try:
                await asyncio.Event().wait()
            finally:
                cancelled.set()
            return "never"

        adapter = HTTPAdapter(handler, False, invoke, "Ingress")
        scope = {"type": "http", "method": "GET", "path": "/", "root_path": "", "headers": [], "query_string": b""}
        replies = adapter.handle(scope, b"", False)
        pending = asyncio.ensure_future(replies.__anext__())
        await started.wait()
        pending.cancel()  # the channel cancels the request's task when the caller goes away
        await asyncio.gather(pending, return_exceptions=True)
        await replies.aclose()
        await asyncio.wait_for(cancelled.wait(), 5)
        return cancelled.is_set()

    assert asyncio.run(scenario())
