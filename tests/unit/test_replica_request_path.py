"""A replica's request path without Ray: what the channel hands it (a Request) and what comes back."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Iterator

import pytest

from serve_nb.common.messages import ReplicaConfig, ReplicaInit
from serve_nb.data.replica import ReplicaCore
from serve_nb.data.request import Request, RequestKind


class Model:
    def __init__(self) -> None:
        self.threads: list[str] = []

    def __call__(self, x: int) -> int:
        self.threads.append(threading.current_thread().name)
        return x + 1

    async def double(self, x: int) -> int:
        return 2 * x

    def count(self, n: int) -> Iterator[int]:
        yield from range(n)

    async def acount(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    def hand_on(self, n: int) -> Iterator[int]:
        """Not a generator function: returns another method's generator."""
        return self.count(n)

    async def ahand_on(self, n: int) -> AsyncIterator[int]:
        return self.acount(n)

    def _private(self) -> None:  # pragma: no cover - never reachable by a handle
        pass


def make_core(obj: Any, *, is_class: bool = True, max_ongoing: int = 2) -> ReplicaCore:
    init = ReplicaInit(
        app="app", deployment="Model", replica_id="r1", def_blob=b"", args_blob=b"", is_class=is_class,
        version="v1", config=ReplicaConfig(max_ongoing_requests=max_ongoing),
    )
    core = ReplicaCore(init)
    core.accept_requests_for(obj)
    return core


async def collect(items: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in items]


def call(core: ReplicaCore, method: str, *args: Any, **kwargs: Any) -> Any:
    return asyncio.run(core.handle(Request(RequestKind.CALL, method, args, kwargs)))


def stream(core: ReplicaCore, method: str, *args: Any) -> list[Any]:
    return asyncio.run(collect(core.handle(Request(RequestKind.STREAM, method, args, {}))))


def test_sync_methods_run_on_the_thread_pool_and_async_ones_on_the_loop():
    model = Model()
    core = make_core(model)
    assert call(core, "__call__", 1) == 2
    assert model.threads[0].startswith("serve_nb-replica")
    assert call(core, "double", x=4) == 8


def test_a_function_deployment_answers_call_only():
    core = make_core(lambda x: x * 3, is_class=False)
    assert call(core, "__call__", 3) == 9
    with pytest.raises(AttributeError, match="is a function; only __call__"):
        call(core, "other")


def test_unknown_and_private_methods_name_the_available_ones():
    core = make_core(Model())
    for name in ("missing", "_private"):
        with pytest.raises(AttributeError, match="Available methods: __call__, acount, ahand_on, count, double, hand_on"):
            call(core, name)


def test_generators_stream_their_items_sync_and_async():
    core = make_core(Model())
    assert stream(core, "count", 3) == [0, 1, 2]
    assert stream(core, "acount", 4) == [0, 1, 2, 3]


def test_a_method_that_returns_a_generator_streams_like_a_generator_function():
    core = make_core(Model())
    assert stream(core, "hand_on", 3) == [0, 1, 2]
    assert stream(core, "ahand_on", 2) == [0, 1]


def test_a_generator_called_without_stream_says_how_to_call_it_in_ray_serves_words():
    core = make_core(Model())
    for name in ("count", "acount", "hand_on", "ahand_on"):
        with pytest.raises(TypeError) as info:
            call(core, name, 2)
        assert str(info.value) == (f"Method '{name}' returned a generator. You must use `handle.options(stream=True)` "
                                   "to call generators on a deployment.")


def test_stream_on_a_plain_method_says_it_returned_no_generator_in_ray_serves_words():
    core = make_core(Model())
    with pytest.raises(TypeError) as info:
        stream(core, "double", 2)
    assert str(info.value) == "Called method 'double' with `handle.options(stream=True)` but it did not return a generator."


def test_try_acquire_admits_max_ongoing_and_release_frees_a_slot():
    core = make_core(Model(), max_ongoing=2)
    assert [core.try_acquire(), core.try_acquire(), core.try_acquire()] == [True, True, False]
    assert core.ongoing == 2
    core.release()
    assert core.try_acquire() and not core.try_acquire()


def test_a_draining_replica_rejects_new_requests():
    core = make_core(Model(), max_ongoing=5)
    assert core.try_acquire()
    core.release()
    asyncio.run(core.prepare_for_shutdown(timeout_s=0))
    assert not core.try_acquire() and core.ongoing == 0


def test_an_http_request_goes_to_the_adapter_and_returns_asgi_messages():
    async def scenario() -> list[list[dict]]:
        core = make_core(lambda: "hello", is_class=False)
        scope = {"type": "http", "method": "GET", "path": "/", "root_path": "", "headers": [], "query_string": b""}
        return await collect(core.handle(Request.http(scope, b"", False)))

    (batch,) = asyncio.run(scenario())
    start, body = batch
    assert (start["type"], start["status"]) == ("http.response.start", 200)
    assert body["body"] == b"hello"


def test_requests_survive_the_wire_form_unchanged():
    for request in (Request(RequestKind.CALL, "m", (1,), {"k": 2}), Request(RequestKind.STREAM, "g", (), {}),
                    Request.http({"path": "/"}, b"body", True)):
        again = Request.from_wire(request.to_wire())
        assert again == request and again.kind is request.kind and again.streams == request.streams
