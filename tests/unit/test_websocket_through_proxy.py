"""WebSockets through the proxy, end to end in one process (no Ray): a real client on a real socket, the
proxy's uvicorn and app, the router, the channel over TCP and the replica running the user's app
(``websocket_stack``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket as StarletteWebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import serve_nb
from serve_nb.data.channel.duplex import WINDOW_ITEMS
from serve_nb.data.http import websocket as proxy_websocket
from websocket_stack import WAIT_S, serving, wait_until


def run(test: Any) -> Any:
    return asyncio.run(asyncio.wait_for(test(), 4 * WAIT_S))


def echo_app() -> tuple[type, FastAPI]:
    app = FastAPI()

    @serve_nb.ingress(app)
    class Echo:
        """Echoes frames as they came (text as text, bytes as bytes); "close" closes with 4000; records
        how each socket ended."""

        def __init__(self) -> None:
            self.ended: list[tuple[str, Any]] = []
            self.received = 0

        @app.websocket("/ws")
        async def ws(self, websocket: WebSocket) -> None:
            await websocket.accept()
            try:
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        self.ended.append(("disconnect", message.get("code")))
                        return
                    self.received += 1
                    if message.get("text") == "close":
                        await websocket.close(4000, "server says bye")
                        self.ended.append(("closed", 4000))
                        return
                    await websocket.send({**message, "type": "websocket.send"})
            except asyncio.CancelledError:
                self.ended.append(("cancelled", None))
                raise

        @app.websocket("/reject")
        async def reject(self, websocket: WebSocket) -> None:
            await websocket.close(code=1008)

        @app.websocket("/typed")
        async def typed(self, websocket: WebSocket) -> None:
            await websocket.accept()
            try:
                await websocket.receive_text()
            except WebSocketDisconnect as exc:
                self.ended.append(("WebSocketDisconnect", (exc.code, exc.reason)))

    return Echo, app


def test_a_websocket_echoes_text_and_binary_frames_through_the_proxy_many_on_one_socket():
    async def test() -> None:
        echo = echo_app()[0]()
        async with serving(echo) as stack:
            async with connect(stack.url()) as ws:
                for i in range(50):
                    await ws.send(f"text {i}")
                    assert await ws.recv() == f"text {i}"
                    await ws.send(bytes([i, 0, 255]))
                    assert await ws.recv() == bytes([i, 0, 255])
                await ws.send("é ✓")
                assert await ws.recv() == "é ✓"
            await wait_until(lambda: echo.ended == [("disconnect", 1000)], "the app saw the client's close")
            await wait_until(lambda: stack.core.ongoing == 0 and not stack.links, "the replica let go of it")

    run(test)


def test_the_apps_close_code_and_reason_reach_the_client():
    async def test() -> None:
        echo = echo_app()[0]()
        async with serving(echo) as stack:
            async with connect(stack.url()) as ws:
                await ws.send("close")
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "server says bye")
            await wait_until(lambda: stack.core.ongoing == 0, "the slot freed")

    run(test)


def test_the_clients_close_code_and_reason_reach_the_app_as_websocket_disconnect():
    async def test() -> None:
        echo = echo_app()[0]()
        async with serving(echo) as stack:
            async with connect(stack.url("/app/typed")) as ws:
                await ws.close(4321, "client says bye")
            await wait_until(lambda: echo.ended, "the app saw the close")
            assert echo.ended == [("WebSocketDisconnect", (4321, "client says bye"))]

    run(test)


def test_a_client_that_drops_its_connection_unblocks_the_app_and_nothing_stays_on_the_replica():
    async def test() -> None:
        echo = echo_app()[0]()
        async with serving(echo) as stack:
            ws = await connect(stack.url())
            await ws.send("hello")
            assert await ws.recv() == "hello"
            ws.transport.abort()  # no close frame: the TCP connection just goes
            await wait_until(lambda: echo.ended, "the app's receive returned")
            assert echo.ended == [("disconnect", 1005)]  # what uvicorn reports for a connection lost after accept
            await wait_until(lambda: stack.core.ongoing == 0 and not stack.links, "the replica let go of it")

    run(test)


def test_an_app_that_ignores_its_clients_departure_is_cancelled_after_the_grace_period(monkeypatch):
    monkeypatch.setattr(proxy_websocket, "DISCONNECT_GRACE_S", 0.2)
    app = FastAPI()
    state: dict[str, Any] = {"cancelled": asyncio.Event()}

    @serve_nb.ingress(app)
    class Stubborn:
        @app.websocket("/ws")
        async def ws(self, websocket: WebSocket) -> None:
            await websocket.accept()
            try:
                await asyncio.Event().wait()  # never reads, never sends
            except asyncio.CancelledError:
                state["cancelled"].set()
                raise

    async def test() -> None:
        async with serving(Stubborn()) as stack:
            async with connect(stack.url()):
                await wait_until(lambda: stack.core.ongoing == 1, "the socket open on the replica")
            await asyncio.wait_for(state["cancelled"].wait(), WAIT_S)
            await wait_until(lambda: stack.core.ongoing == 0 and not stack.links, "the replica let go of it")

    run(test)


def test_many_concurrent_sockets_on_one_replica_each_get_their_own_messages():
    async def test() -> None:
        echo = echo_app()[0]()
        async with serving(echo, max_ongoing=40) as stack:

            async def client(n: int) -> list[str]:
                async with connect(stack.url()) as ws:
                    got = []
                    for i in range(10):
                        await ws.send(f"{n}:{i}")
                        got.append(await ws.recv())
                    return got

            results = await asyncio.gather(*(client(n) for n in range(30)))
            assert results == [[f"{n}:{i}" for i in range(10)] for n in range(30)]
            await wait_until(lambda: stack.core.ongoing == 0, "every slot freed")

    run(test)


def test_an_open_socket_is_one_ongoing_request_and_a_third_waits_for_a_free_slot():
    async def test() -> None:
        echo = echo_app()[0]()
        async with serving(echo, max_ongoing=2) as stack:
            first = await connect(stack.url())
            second = await connect(stack.url())
            await wait_until(lambda: stack.core.ongoing == 2, "two sockets on the replica")
            third = asyncio.ensure_future(connect(stack.url()))
            await wait_until(lambda: stack.router.num_queued == 1, "the third queued in the router")
            assert not third.done() and stack.core.ongoing == 2
            await first.close()
            ws = await asyncio.wait_for(third, WAIT_S)
            await ws.send("third")
            assert await ws.recv() == "third"
            assert stack.core.ongoing == 2 and stack.router.num_queued == 0
            await ws.close()
            await second.close()

    run(test)


def test_a_third_socket_beyond_the_queue_limit_gets_503_like_a_request():
    async def test() -> None:
        echo = echo_app()[0]()
        async with serving(echo, max_ongoing=1, max_queued=0) as stack:
            async with connect(stack.url()):
                await wait_until(lambda: stack.core.ongoing == 1, "one socket on the replica")
                with pytest.raises(InvalidStatus) as refused:
                    await connect(stack.url())
                assert refused.value.response.status_code == 503

    run(test)


@pytest.mark.parametrize("path", ["/app/reject", "/app/no-such-route", "/elsewhere", "/-/routes"])
def test_a_socket_the_app_rejects_or_that_has_no_route_gets_403(path: str):
    async def test() -> None:
        async with serving(echo_app()[0]()) as stack:
            with pytest.raises(InvalidStatus) as refused:
                await connect(stack.url(path))
            assert refused.value.response.status_code == 403
            await wait_until(lambda: stack.core.ongoing == 0, "no slot held")

    run(test)


def test_a_deployment_without_an_asgi_app_refuses_websockets_with_403():
    class Plain:
        def __call__(self, request: Any) -> str:
            return "http only"

    async def test() -> None:
        async with serving(Plain()) as stack:
            with pytest.raises(InvalidStatus) as refused:
                await connect(stack.url())
            assert refused.value.response.status_code == 403

    run(test)


def test_an_app_that_fails_before_accepting_gives_500_and_after_accepting_closes_with_1011():
    async def fails_early(websocket: StarletteWebSocket) -> None:
        raise RuntimeError("before accept")

    async def fails_late(websocket: StarletteWebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        raise RuntimeError("after accept")

    app = Starlette(routes=[WebSocketRoute("/early", fails_early), WebSocketRoute("/late", fails_late)])

    @serve_nb.ingress(app)
    class Failing:
        pass

    async def test() -> None:
        async with serving(Failing()) as stack:
            with pytest.raises(InvalidStatus) as refused:
                await connect(stack.url("/app/early"))
            assert refused.value.response.status_code == 500
            async with connect(stack.url("/app/late")) as ws:
                await ws.send("go")
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
            assert closed.value.rcvd.code == 1011
            await wait_until(lambda: stack.core.ongoing == 0, "the slots freed")

    run(test)


def test_a_message_over_the_proxys_limit_is_refused_with_1009():
    async def test() -> None:
        echo = echo_app()[0]()
        async with serving(echo, max_body_bytes=1024) as stack:
            async with connect(stack.url()) as ws:
                await ws.send(b"x" * 1024)
                assert await ws.recv() == b"x" * 1024
                await ws.send(b"x" * 1025)
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
            assert closed.value.rcvd.code == 1009
            await wait_until(lambda: echo.ended == [("disconnect", 1009)], "the app told")
            await wait_until(lambda: stack.core.ongoing == 0, "the slot freed")

    run(test)


def test_a_client_faster_than_the_app_is_held_back_and_nothing_is_lost():
    app = FastAPI()
    gate = asyncio.Event()
    got: list[str] = []

    @serve_nb.ingress(app)
    class Slow:
        @app.websocket("/ws")
        async def ws(self, websocket: WebSocket) -> None:
            await websocket.accept()
            await gate.wait()
            while (text := await websocket.receive_text()) != "end":
                got.append(text)
            await websocket.send_text(str(len(got)))

    async def test() -> None:
        async with serving(Slow()) as stack:
            async with connect(stack.url()) as ws:
                sending = asyncio.ensure_future(asyncio.gather(*[ws.send(f"m{i}") for i in range(500)]))
                await wait_until(lambda: stack.links and len(stack.links[0]._queue) == WINDOW_ITEMS, "window full")
                assert len(stack.links[0]._queue) == WINDOW_ITEMS  # the replica holds one window, no more
                gate.set()
                await sending
                await ws.send("end")
                assert await ws.recv() == "500"
            assert got == [f"m{i}" for i in range(500)]

    run(test)


def test_an_app_faster_than_its_client_waits_in_send_and_nothing_is_lost():
    app = FastAPI()
    size = 64 * 1024

    @serve_nb.ingress(app)
    class Fast:
        @app.websocket("/ws")
        async def ws(self, websocket: WebSocket) -> None:
            await websocket.accept()
            i = 0
            while True:  # as fast as it may, for as long as its client stays
                await websocket.send_bytes(i.to_bytes(4, "big") * (size // 4))
                i += 1

    async def test() -> None:
        async with serving(Fast()) as stack:
            async with connect(stack.url(), max_size=None) as ws:
                # The client reads nothing: every buffer on the way fills (finite, however the kernel sizes its
                # own), then the replica's window, and the app waits in send.
                await wait_until(lambda: stack.links and not stack.links[0].outbound.has_room, "the app held back")
                received = [await ws.recv() for _ in range(500)]
            assert [int.from_bytes(m[:4], "big") for m in received] == list(range(500))
            await wait_until(lambda: stack.core.ongoing == 0, "the app ended once its client left")

    run(test)
