"""HTTP end to end in one process: the proxy's ASGI app, the request as it crosses the channel
(pickled), and the replica's HTTPAdapter running the user's code. No Ray, no sockets."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import pickle
from typing import Any, AsyncIterator, Callable

import httpx
import pytest
from starlette.requests import Request as StarletteRequest
from starlette.responses import StreamingResponse

from serve_nb.config import HTTPOptions
from serve_nb.data.channel.body import ReceivedBody, pump_body
from serve_nb.data.channel.frames import Kind
from serve_nb.data.http.body import INLINE_BODY_BYTES
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
        self.requests: list[Request] = []  # as the replica received them

    async def stream(self, request: Request, body: Any = None, **_policy: Any) -> AsyncIterator[list[dict]]:
        request = Request.from_wire(pickle.loads(pickle.dumps(request.to_wire())))
        self.requests.append(request)
        pump = None
        if body is not None:  # the channel: the caller pumps pieces, the replica's end queues them for the app
            received = ReceivedBody()

            def deliver(kind: int, piece: bytes) -> None:
                received.feed(piece) if kind == Kind.BODY else received.end()

            async def no_back_pressure() -> None:
                return None

            pump = asyncio.ensure_future(pump_body(body.__aiter__(), deliver, no_back_pressure))
            request = request.with_rest(received)
        try:
            async for batch in self.adapter.handle(*request.args):
                batch = pickle.loads(pickle.dumps(batch))
                self.batches.append(batch)
                yield batch
        finally:
            if pump is not None:
                pump.cancel()


class Client:
    def __init__(self, router: AdapterRouter) -> None:
        self._router = router
        self.longpoll = self

    def subscribe(self, key: str, callback: Callable[[Any], None]) -> None:
        if key == ROUTES_KEY:  # the only other key a proxy listens to is its logging config: none here
            callback({"/app": ("app", "Ingress")})

    def router(self, dep: Any) -> AdapterRouter:
        return self._router


def serve(obj: Any, is_class: bool, **options: Any) -> tuple[ProxyApp, AdapterRouter]:
    router = AdapterRouter(HTTPAdapter(obj, is_class, invoke, "Ingress"))
    return ProxyApp(Client(router), HTTPOptions(**options)), router


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


def test_a_failing_handler_gives_ray_serves_500_with_the_details_in_headers():
    def handler(req: StarletteRequest) -> str:
        raise ValueError("the secret detail")

    app, router = serve(handler, is_class=False)
    response = asyncio.run(request(app, "/app"))
    assert (response.status_code, response.text) == (500, "Internal Server Error")
    assert response.headers["x-serve-nb-error"] == "ValueError raised in deployment 'Ingress'"
    assert response.headers["x-request-id"] == router.requests[0].request_id, "the id the replica's log line carries"
    assert "secret detail" not in str(response.headers)


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


# --------------------------------------------------------------------------- large bodies, streamed


async def _pieces(total: int, piece: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, total, piece):
        yield bytes([start // piece % 251]) * min(piece, total - start)


def _expected(total: int, piece: int = 64 * 1024) -> str:
    digest = hashlib.sha256()
    for start in range(0, total, piece):
        digest.update(bytes([start // piece % 251]) * min(piece, total - start))
    return digest.hexdigest()


def test_a_large_body_reaches_the_app_in_pieces_and_whole():
    async def handler(req: StarletteRequest) -> dict:
        digest, pieces, size = hashlib.sha256(), 0, 0
        async for piece in req.stream():
            digest.update(piece)
            pieces += 1
            size += len(piece)
        return {"sha": digest.hexdigest(), "pieces": pieces, "size": size}

    total = 3 * INLINE_BODY_BYTES + 12345
    app, router = serve(handler, is_class=False)
    response = asyncio.run(request(app, "/app", method="POST", content=_pieces(total)))
    assert response.status_code == 200
    assert response.json()["sha"] == _expected(total) and response.json()["size"] == total
    assert response.json()["pieces"] > 10, "read as it arrived, not joined first"
    [received] = router.requests
    scope, head, _, more = received.args
    assert more is True and INLINE_BODY_BYTES < len(head) <= INLINE_BODY_BYTES + 64 * 1024, "only the head went inline"


def test_a_small_body_still_goes_inside_its_request():
    async def handler(req: StarletteRequest) -> str:
        return str(len(await req.body()))

    app, router = serve(handler, is_class=False)
    response = asyncio.run(request(app, "/app", method="POST", content=_pieces(INLINE_BODY_BYTES // 2)))
    assert response.text == str(INLINE_BODY_BYTES // 2)
    assert router.requests[0].args[3] is False


def test_a_large_inline_body_reaches_the_app_in_pieces_and_whole():
    async def handler(req: StarletteRequest) -> dict:
        pieces = [piece async for piece in req.stream()]
        return {"sha": hashlib.sha256(b"".join(pieces)).hexdigest(), "pieces": sum(1 for p in pieces if p)}

    total = INLINE_BODY_BYTES // 2 + 12345
    app, router = serve(handler, is_class=False)
    response = asyncio.run(request(app, "/app", method="POST", content=_pieces(total)))
    assert response.json()["sha"] == _expected(total) and router.requests[0].args[3] is False
    assert response.json()["pieces"] > 1, "passed on as the pieces the proxy read, not joined into one"


def test_a_streamed_body_growing_past_the_limit_is_413():
    seen: list[int] = []

    async def handler(req: StarletteRequest) -> str:
        async for piece in req.stream():
            seen.append(len(piece))
        return "read it all"

    limit = 2 * INLINE_BODY_BYTES
    app, _ = serve(handler, is_class=False, max_body_bytes=limit)
    response = asyncio.run(request(app, "/app", method="POST", content=_pieces(3 * INLINE_BODY_BYTES)))
    assert response.status_code == 413 and response.headers["connection"] == "close"
    assert sum(seen) <= limit, "the app never got more than the limit"


def test_an_app_may_answer_before_reading_a_large_body():
    async def handler() -> str:
        return "did not read it"

    app, _ = serve(handler, is_class=False)
    response = asyncio.run(request(app, "/app", method="POST", content=_pieces(4 * INLINE_BODY_BYTES)))
    assert (response.status_code, response.text) == (200, "did not read it")


def test_a_whole_body_is_already_read_for_every_way_a_request_reads_it():
    seen: dict[str, Any] = {}

    async def handler(req: StarletteRequest) -> str:
        seen["body"] = await req.body()
        seen["json"] = await req.json()
        seen["stream"] = [piece async for piece in req.stream()]
        return "ok"

    app, _ = serve(handler, is_class=False)
    response = asyncio.run(request(app, "/app", method="POST", json={"a": [1, 2]}))
    assert response.text == "ok"
    assert seen == {"body": b'{"a":[1,2]}', "json": {"a": [1, 2]}, "stream": [b'{"a":[1,2]}', b""]}


def test_a_form_in_a_whole_body_is_parsed():
    async def handler(req: StarletteRequest) -> dict:
        form = await req.form()
        return {"name": form["name"], "n": form["n"]}

    app, _ = serve(handler, is_class=False)
    response = asyncio.run(request(app, "/app", method="POST", data={"name": "ada", "n": "3"}))
    assert response.json() == {"name": "ada", "n": "3"}
