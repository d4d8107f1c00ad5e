"""HTTP ingress over real HTTP against the running proxy."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import threading
import time

import httpx
import pytest
import ray
import requests
from fastapi import Depends, FastAPI, WebSocket
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse

import serve_nb as serve
from helpers import HTTP_PORT, URL, deployment_detail, make_signal, ongoing_requests, serve_logs, taken_port, wait_until


def test_seed_most_basic_ingress(serve_instance):
    @serve.deployment
    class MostBasicIngress:
        async def __call__(self, request: Request) -> str:
            name = (await request.json())["name"]
            return f"Hello {name}!"

    app = MostBasicIngress.bind()
    serve.run(app)
    assert requests.get(f"{URL}/", json={"name": "Corey"}).text == "Hello Corey!"


def test_seed_fastapi_ingress(serve_instance):
    fastapi_app = FastAPI()

    @serve.deployment
    @serve.ingress(fastapi_app)
    class FastAPIIngress:
        @fastapi_app.get("/{name}")
        async def say_hi(self, name: str) -> str:
            return PlainTextResponse(f"Hello {name}!")

    app = FastAPIIngress.bind()
    serve.run(app)
    assert requests.get(f"{URL}/Corey").text == "Hello Corey!"


@serve.deployment
class Echo:
    """Reports what it saw of the request."""

    async def __call__(self, request: Request):
        body = await request.body()
        return {
            "method": request.method,
            "path": request.url.path,
            "root_path": request.scope.get("root_path"),
            "query": dict(request.query_params),
            "header": request.headers.get("x-test"),
            "cookie": request.cookies.get("flavour"),
            "body_len": len(body),
        }


def test_request_passthrough(serve_instance):
    serve.run(Echo.bind(), name="echo", route_prefix="/echo")
    r = requests.post(f"{URL}/echo/sub/path?a=1&b=two", data=b"xyz", headers={"x-test": "yes"}, cookies={"flavour": "mint"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "method": "POST",
        "path": "/echo/sub/path",
        "root_path": "/echo",
        "query": {"a": "1", "b": "two"},
        "header": "yes",
        "cookie": "mint",
        "body_len": 3,
    }


def test_form_and_stream_body(serve_instance):
    @serve.deployment
    class Forms:
        async def __call__(self, request: Request):
            if request.url.path.endswith("/form"):
                form = await request.form()
                return {k: form[k] for k in form}
            total = 0
            async for chunk in request.stream():
                total += len(chunk)
            return {"streamed": total}

    serve.run(Forms.bind(), name="forms", route_prefix="/forms")
    assert requests.post(f"{URL}/forms/form", data={"x": "1", "y": "2"}).json() == {"x": "1", "y": "2"}
    assert requests.post(f"{URL}/forms/raw", data=b"a" * 1000).json() == {"streamed": 1000}


def test_call_without_request_argument(serve_instance):
    @serve.deployment
    class NoArg:
        def __call__(self):
            return "no request needed"

    serve.run(NoArg.bind(), name="noarg", route_prefix="/noarg")
    assert requests.get(f"{URL}/noarg").text == "no request needed"


class Item(BaseModel):
    name: str
    price: float


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_return_value_conversions(serve_instance):
    @serve.deployment
    class Returns:
        async def __call__(self, request: Request):
            kind = request.url.path.rsplit("/", 1)[-1]
            return {
                "str": lambda: "plain",
                "bytes": lambda: b"\x00\x01raw",
                "none": lambda: None,
                "dict": lambda: {"a": 1},
                "list": lambda: [1, 2, 3],
                "pydantic": lambda: Item(name="pen", price=1.5),
                "dataclass": lambda: Point(1, 2),
                "json": lambda: JSONResponse({"custom": True}, status_code=201, headers={"x-extra": "1"}),
                "html": lambda: HTMLResponse("<b>bold</b>"),
                "redirect": lambda: RedirectResponse("/returns/str", status_code=307),
                "teapot": lambda: Response("short and stout", status_code=418, headers={"x-pot": "tea"}),
            }[kind]()

    serve.run(Returns.bind(), name="returns", route_prefix="/returns")
    r = requests.get(f"{URL}/returns/str")
    assert (r.text, r.headers["content-type"]) == ("plain", "text/plain; charset=utf-8")
    assert requests.get(f"{URL}/returns/bytes").content == b"\x00\x01raw"
    r = requests.get(f"{URL}/returns/none")
    assert (r.status_code, r.content) == (200, b"")
    assert requests.get(f"{URL}/returns/dict").json() == {"a": 1}
    assert requests.get(f"{URL}/returns/list").json() == [1, 2, 3]
    assert requests.get(f"{URL}/returns/pydantic").json() == {"name": "pen", "price": 1.5}
    assert requests.get(f"{URL}/returns/dataclass").json() == {"x": 1, "y": 2}
    r = requests.get(f"{URL}/returns/json")
    assert (r.status_code, r.json(), r.headers["x-extra"]) == (201, {"custom": True}, "1")
    r = requests.get(f"{URL}/returns/html")
    assert r.headers["content-type"].startswith("text/html") and r.text == "<b>bold</b>"
    r = requests.get(f"{URL}/returns/redirect", allow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (307, "/returns/str")
    assert requests.get(f"{URL}/returns/redirect").text == "plain"
    r = requests.get(f"{URL}/returns/teapot")
    assert (r.status_code, r.text, r.headers["x-pot"]) == (418, "short and stout", "tea")


def test_streaming_response_streams_first_chunk_early(serve_instance):
    @serve.deployment
    class Streamer:
        def __init__(self):
            self.release = asyncio.Event()

        async def __call__(self, request: Request):
            async def gen():
                yield b"first;"
                await self.release.wait()
                yield b"second"

            return StreamingResponse(gen(), media_type="text/plain")

        async def open(self):
            self.release.set()

    h = serve.run(Streamer.bind(), name="streamer", route_prefix="/stream")
    with requests.get(f"{URL}/stream", stream=True, timeout=30) as r:
        chunks = r.iter_content(chunk_size=None)
        assert next(chunks) == b"first;"  # arrives while the generator is still blocked
        h.open.remote().result()
        assert b"".join(chunks) == b"second"


def test_fastapi_features_under_prefix(serve_instance):
    api = FastAPI()

    def get_multiplier() -> int:
        return 3

    @serve.deployment
    @serve.ingress(api)
    class Shop:
        def __init__(self, currency: str):
            self.currency = currency

        @api.get("/items/{item_id}")
        def read(self, item_id: int, q: str | None = None):
            return {"item_id": item_id, "q": q, "currency": self.currency}

        @api.post("/items")
        async def create(self, item: Item, k: int = Depends(get_multiplier)):
            return {"name": item.name, "total": item.price * k, "currency": self.currency}

    serve.run(Shop.bind("EUR"), name="shop", route_prefix="/shop")
    assert requests.get(f"{URL}/shop/items/7?q=red").json() == {"item_id": 7, "q": "red", "currency": "EUR"}
    assert requests.post(f"{URL}/shop/items", json={"name": "pen", "price": 2.0}).json() == {
        "name": "pen", "total": 6.0, "currency": "EUR",
    }
    assert requests.post(f"{URL}/shop/items", json={"name": "pen"}).status_code == 422
    assert requests.get(f"{URL}/shop/items/notanint").status_code == 422
    spec = requests.get(f"{URL}/shop/openapi.json").json()
    assert "/items/{item_id}" in spec["paths"]
    params = [p["name"] for p in spec["paths"]["/items/{item_id}"]["get"]["parameters"]]
    assert params == ["item_id", "q"]  # `self` is not a parameter
    docs = requests.get(f"{URL}/shop/docs")
    assert docs.status_code == 200 and "/shop/openapi.json" in docs.text


def test_ingress_builder_function(serve_instance):
    def build():
        app = FastAPI()

        @app.get("/pid")
        def pid():
            return {"pid": os.getpid()}

        return app

    @serve.deployment
    @serve.ingress(build)
    class Built:
        pass

    serve.run(Built.bind(), name="built", route_prefix="/built")
    assert requests.get(f"{URL}/built/pid").json()["pid"] != os.getpid()


def test_starlette_app_ingress(serve_instance):
    from starlette.applications import Starlette
    from starlette.routing import Route

    async def hello(request):
        return PlainTextResponse(f"hello {request.path_params['who']} via {request.scope['root_path']}")

    app = Starlette(routes=[Route("/hello/{who}", hello)])

    @serve.deployment
    @serve.ingress(app)
    class StarletteIngress:
        pass

    serve.run(StarletteIngress.bind(), name="starlette", route_prefix="/st")
    assert requests.get(f"{URL}/st/hello/ann").text == "hello ann via /st"
    assert requests.get(f"{URL}/st/nope").status_code == 404


def test_several_apps_by_prefix_longest_wins_and_delete_one(serve_instance):
    @serve.deployment
    class Named:
        def __init__(self, label):
            self.label = label

        def __call__(self):
            return self.label

    serve.run(Named.bind("root"), name="root-app", route_prefix="/")
    serve.run(Named.bind("a"), name="a-app", route_prefix="/a")
    serve.run(Named.bind("ab"), name="ab-app", route_prefix="/a/b")
    assert requests.get(f"{URL}/a").text == "a"
    assert requests.get(f"{URL}/a/x").text == "a"
    assert requests.get(f"{URL}/a/b/c").text == "ab"
    assert requests.get(f"{URL}/ab").text == "root"  # '/a' does not match '/ab'
    routes = requests.get(f"{URL}/-/routes").json()
    assert routes["/a"] == "a-app" and routes["/a/b"] == "ab-app" and routes["/"] == "root-app"
    assert requests.get(f"{URL}/-/healthz").text == "success"

    serve.delete("a-app")
    assert requests.get(f"{URL}/a/x").text == "root"
    assert requests.get(f"{URL}/a/b/c").text == "ab"
    assert "/a" not in requests.get(f"{URL}/-/routes").json()


def test_unknown_path_is_404_naming_routes(serve_instance):
    @serve.deployment
    def only():
        return "x"

    serve.run(only.bind(), name="only", route_prefix="/only")
    r = requests.get(f"{URL}/nowhere")
    assert r.status_code == 404 and "/-/routes" in r.text


def test_user_exception_is_500_without_traceback(serve_instance):
    @serve.deployment
    class Fails:
        async def __call__(self, request: Request):
            data = await request.json()  # malformed JSON raises here
            raise KeyError(f"secret-{data}")

    serve.run(Fails.bind(), name="fails", route_prefix="/fails")
    r = requests.post(f"{URL}/fails", data=b"{not json")
    assert (r.status_code, r.text) == (500, "Internal Server Error")
    assert "JSONDecodeError" in r.headers["x-serve-nb-error"]
    r = requests.post(f"{URL}/fails", json={"a": 1})
    assert r.status_code == 500 and "KeyError" in r.headers["x-serve-nb-error"] and "secret" not in str(r.headers)


def test_failed_app_answers_503_at_once(serve_instance):
    @serve.deployment
    class NeverUp:
        def __init__(self):
            raise RuntimeError("cannot load")

    with pytest.raises(serve.exceptions.DeployError, match="cannot load"):
        serve.run(NeverUp.bind(), name="neverup", route_prefix="/neverup")
    start = time.monotonic()
    r = requests.get(f"{URL}/neverup", timeout=10)
    assert r.status_code == 503 and "cannot load" in r.text
    assert time.monotonic() - start < 2.0


def test_queue_full_answers_503(serve_instance):
    signal = make_signal()

    @serve.deployment(max_ongoing_requests=1, max_queued_requests=1)
    class OneAtATime:
        def __init__(self, signal):
            self.signal = signal

        async def __call__(self):
            await self.signal.wait.remote()
            return "done"

    serve.run(OneAtATime.bind(signal), name="narrow", route_prefix="/narrow")

    async def burst():
        async with httpx.AsyncClient(timeout=30) as client:
            first = asyncio.ensure_future(client.get(f"{URL}/narrow"))
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: wait_until(lambda: ongoing_requests("narrow", "OneAtATime") == [1], what="first request")
            )
            # The replica is busy: of three more, one waits in the proxy's queue and two find it full.
            more = [asyncio.ensure_future(client.get(f"{URL}/narrow")) for _ in range(3)]
            rejected = []
            for answered in asyncio.as_completed(more, timeout=20):  # raises TimeoutError after 20 s
                rejected.append(await answered)
                if len(rejected) == 2:
                    break
            signal.send.remote()
            return rejected, await first, await asyncio.gather(*more)

    rejected, first, everything = asyncio.run(burst())
    assert [r.status_code for r in rejected] == [503, 503]
    assert all("max_queued_requests" in r.text for r in rejected)
    assert first.status_code == 200
    assert sorted(r.status_code for r in everything) == [200, 503, 503]


def test_client_disconnect_cancels_the_replica_work(serve_instance):
    @serve.deployment
    class Patient:
        def __init__(self):
            self.cancelled = False

        async def __call__(self):
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.cancelled = True
                raise
            return "finished"

        def was_cancelled(self):
            return self.cancelled

    h = serve.run(Patient.bind(), name="patient", route_prefix="/patient")
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{URL}/patient", timeout=0.5)
    wait_until(lambda: h.was_cancelled.remote().result(), what="the replica to see the cancellation")


@pytest.mark.parametrize("size", [1 << 20, 50 << 20])
def test_large_bodies_echo_intact(serve_instance, size):
    @serve.deployment
    class Mirror:
        async def __call__(self, request: Request):
            return Response(await request.body(), media_type="application/octet-stream")

    serve.run(Mirror.bind(), name="mirror", route_prefix="/mirror")
    payload = os.urandom(size)
    r = requests.post(f"{URL}/mirror", data=payload, timeout=120)
    assert r.status_code == 200 and r.content == payload


def _proxy_process():
    import psutil

    [proxy] = [p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [""])[0].startswith("ray::ProxyActor")]
    return proxy


def test_large_uploads_stream_through_the_proxy_without_piling_up_in_it(serve_instance):
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    @serve.deployment(max_ongoing_requests=8)
    class Digest:
        async def __call__(self, request: Request) -> str:
            digest = hashlib.sha256()
            async for piece in request.stream():  # read as it arrives: the app holds no more than the proxy
                digest.update(piece)
            return digest.hexdigest()

    serve.run(Digest.bind(), name="digest", route_prefix="/digest")
    proxy = _proxy_process()
    payloads = [os.urandom(50 << 20) for _ in range(4)]
    requests.post(f"{URL}/digest", data=payloads[0][: 4 << 20], timeout=60)  # warm: buffers at their working size
    base = proxy.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:  # the proxy's resident memory, as often as the machine allows
        while not done.is_set():
            peak[0] = max(peak[0], proxy.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda body: requests.post(f"{URL}/digest", data=body, timeout=120), payloads))
    finally:
        done.set()
        sampler.join(10)
    assert [r.text for r in replies] == [hashlib.sha256(p).hexdigest() for p in payloads]
    growth_mb = (peak[0] - base) / 2**20
    assert growth_mb < 50, f"the proxy grew {growth_mb:.0f} MB for 200 MB of uploads in flight"


def test_an_app_answering_before_reading_a_large_upload_answers_and_keeps_serving(serve_instance):
    @serve.deployment
    def hasty() -> str:
        return "answered without reading"

    serve.run(hasty.bind(), name="hasty", route_prefix="/hasty")
    with requests.Session() as session:
        for _ in range(3):  # the same keep-alive session each time: an unread body must not poison it
            reply = session.post(f"{URL}/hasty", data=os.urandom(20 << 20), timeout=60)
            assert (reply.status_code, reply.text) == (200, "answered without reading")
        assert session.get(f"{URL}/hasty", timeout=10).text == "answered without reading"


def test_a_thousand_slow_clients_do_not_stall_others(serve_instance):
    @serve.deployment
    def fast():
        return "quick"

    serve.run(fast.bind(), name="fast", route_prefix="/fast")
    slow = []
    try:
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", HTTP_PORT))
            s.sendall(b"POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial")  # never finishes
            slow.append(s)
        start = time.monotonic()
        for _ in range(20):
            assert requests.get(f"{URL}/fast", timeout=10).text == "quick"
        assert time.monotonic() - start < 10
    finally:
        for s in slow:
            s.close()


def test_replica_killed_mid_request_fails_only_that_request(serve_instance):
    arrived = make_signal()

    @serve.deployment
    class Fragile:
        def __init__(self, arrived):
            self.arrived = arrived

        async def __call__(self, request: Request):
            if request.url.path.endswith("/hang"):
                await self.arrived.send.remote()
                await asyncio.sleep(60)
            return "alive"

    serve.run(Fragile.bind(arrived), name="fragile", route_prefix="/fragile")
    assert requests.get(f"{URL}/fragile").text == "alive"
    result: dict = {}

    def hang():
        result["r"] = requests.get(f"{URL}/fragile/hang", timeout=60)

    t = threading.Thread(target=hang)
    t.start()
    wait_until(lambda: ray.get(arrived.is_set.remote()), what="the request to reach the replica")
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "fragile#Fragile" in a["name"]]
    assert len(names) == 1
    ray.kill(ray.get_actor(names[0], namespace="serve_nb"), no_restart=True)
    t.join(30)
    assert (result["r"].status_code, result["r"].text) == (500, "Internal Server Error")  # as Ray Serve answers it
    assert result["r"].headers["x-serve-nb-error"].startswith("replica unavailable: Lost the connection")
    wait_until(lambda: requests.get(f"{URL}/fragile", timeout=10).text == "alive", what="a replacement replica")
    assert all(requests.get(f"{URL}/fragile").text == "alive" for _ in range(10))


def test_a_plain_deployment_refuses_a_websocket_upgrade_with_403(serve_instance):
    @serve.deployment
    def plain():
        return "plain"

    serve.run(plain.bind(), name="wsapp", route_prefix="/ws")
    r = requests.get(
        f"{URL}/ws",
        headers={"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                 "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
    )
    assert r.status_code == 403
    assert requests.get(f"{URL}/ws").text == "plain"  # HTTP still served


WS_URL = f"ws://127.0.0.1:{HTTP_PORT}"


def _websocket_app():
    app = FastAPI()

    @serve.deployment(max_ongoing_requests=2)
    @serve.ingress(app)
    class Sockets:
        """Echoes frames; reports the close code its last client sent; counts the sockets open at once."""

        def __init__(self) -> None:
            self.last_close: tuple[int, str] | None = None
            self.open = 0
            self.most_open = 0

        @app.websocket("/echo")
        async def echo(self, websocket: WebSocket) -> None:
            await websocket.accept()
            self.open += 1
            self.most_open = max(self.most_open, self.open)
            try:
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        self.last_close = (message["code"], message.get("reason") or "")
                        return
                    if message.get("text") == "stats":
                        await websocket.send_json({"last_close": self.last_close, "most_open": self.most_open})
                    elif message.get("text") == "close":
                        await websocket.close(4000, "server says bye")
                        return
                    else:
                        await websocket.send({**message, "type": "websocket.send"})
            finally:
                self.open -= 1

    return Sockets


def test_a_fastapi_websocket_echoes_frames_and_passes_close_codes_both_ways(serve_instance):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    serve.run(_websocket_app().bind(), name="sockets", route_prefix="/sockets")
    with connect(f"{WS_URL}/sockets/echo", open_timeout=30, additional_headers={"X-Request-ID": "ws-app-closes"}) as ws:
        assert ws.response.headers["x-request-id"] == "ws-app-closes"
        for i in range(20):
            ws.send(f"text {i}")
            assert ws.recv(timeout=30) == f"text {i}"
            ws.send(bytes([i, 255]))
            assert ws.recv(timeout=30) == bytes([i, 255])
        ws.send("close")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=30)
    assert (ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason) == (4000, "server says bye")

    with connect(f"{WS_URL}/sockets/echo", open_timeout=30, additional_headers={"X-Request-ID": "ws-client-closes"}) as ws:
        ws.close(4321, "client says bye")

    def last_close() -> list | None:
        with connect(f"{WS_URL}/sockets/echo", open_timeout=30) as ws:
            ws.send("stats")
            return json.loads(ws.recv(timeout=30))["last_close"]

    assert wait_until(lambda: last_close() == [4321, "client says bye"], what="the client's close code at the app")
    wait_until(lambda: ongoing_requests("sockets", "Sockets") == [0], what="every socket's slot freed")
    # The proxy's access line for each socket: method WS and the close code of whoever closed first.
    wait_until(lambda: " ws-app-closes -- WS /sockets 4000 " in serve_logs("proxy_*.log")
               and " ws-client-closes -- WS /sockets 4321 " in serve_logs("proxy_*.log"),
               what="the proxy's access lines of both sockets")


def test_open_sockets_count_against_max_ongoing_requests_and_a_third_waits_for_a_free_slot(serve_instance):
    from websockets.sync.client import connect

    serve.run(_websocket_app().bind(), name="sockets", route_prefix="/sockets")
    first = connect(f"{WS_URL}/sockets/echo", open_timeout=30)
    second = connect(f"{WS_URL}/sockets/echo", open_timeout=30)
    try:
        wait_until(lambda: ongoing_requests("sockets", "Sockets") == [2], what="two sockets on the replica")
        third: dict = {}
        opener = threading.Thread(target=lambda: third.update(ws=connect(f"{WS_URL}/sockets/echo", open_timeout=60)))
        opener.start()
        wait_until(lambda: deployment_detail("sockets", "Sockets").ongoing >= 3, what="the third socket queued")
        assert "ws" not in third  # its handshake waits: the replica is full
        first.close()
        opener.join(60)
        ws = third["ws"]
        ws.send("stats")
        assert json.loads(ws.recv(timeout=30))["most_open"] == 2
        ws.close()
    finally:
        first.close()
        second.close()
    wait_until(lambda: ongoing_requests("sockets", "Sockets") == [0], what="every socket's slot freed")


def test_custom_http_options_timeout_debug_and_port_taken(ray_session):
    """Runs last in this module: restarts Serve with its own options, then back to the defaults."""
    serve.shutdown()
    try:
        serve.start(http_options=serve.HTTPOptions(port=8123, request_timeout_s=0.5, debug_errors=True))
        assert all(p.address == "127.0.0.1:8123" for p in serve.status().proxy_details.values())
        assert set(serve.status().proxies.values()) == {"HEALTHY"}

        @serve.deployment
        class Slow:
            async def __call__(self, request: Request):
                if request.url.path.endswith("/boom"):
                    raise ValueError("debug me")
                await asyncio.sleep(5)
                return "late"

        serve.run(Slow.bind(), name="slowhttp", route_prefix="/slow")
        start = time.monotonic()
        r = requests.get("http://127.0.0.1:8123/slow")
        assert r.status_code == 408 and time.monotonic() - start < 3
        r = requests.get("http://127.0.0.1:8123/slow/boom")
        assert r.status_code == 500 and "Traceback" in r.text and "debug me" in r.text
    finally:
        serve.shutdown()

    try:
        with taken_port() as port:
            with pytest.raises(serve.exceptions.RayServeException, match=f"Port {port} .* already in use"):
                serve.start(http_options={"port": port, "start_timeout_s": 20})
    finally:
        serve.shutdown()
