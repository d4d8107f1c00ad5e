"""``@serve.batch`` in real replicas: through handles, over HTTP, streamed, and tuned by ``user_config``."""

from __future__ import annotations

import concurrent.futures

import requests
from starlette.requests import Request
from starlette.responses import StreamingResponse

import serve_nb as serve
from helpers import URL


@serve.deployment(max_ongoing_requests=16, ray_actor_options={"num_cpus": 0.1})
class Batcher:
    """Answers each item with the size of the batch it went in."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def reconfigure(self, config: dict) -> None:
        self.sized.set_max_batch_size(config["max_batch_size"])

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.5)
    async def sized(self, items: list[int]) -> list[tuple[int, int]]:
        self.sizes.append(len(items))
        return [(item, len(items)) for item in items]

    async def __call__(self, request: Request) -> str:
        item, size = await self.sized(int(request.query_params["i"]))
        return f"{item}:{size}"

    @serve.batch(max_batch_size=2, batch_wait_timeout_s=0.5)
    async def countdown(self, starts: list[int]):
        for step in range(max(starts)):
            yield [start - step if step < start else StopIteration for start in starts]

    def batch_sizes(self) -> list[int]:
        return self.sizes


@serve.deployment(max_ongoing_requests=8, ray_actor_options={"num_cpus": 0.1})
class StreamingBatcher:
    """Over HTTP: each request streams its own countdown, computed in batches with the others."""

    @serve.batch(max_batch_size=2, batch_wait_timeout_s=0.5)
    async def countdown(self, starts: list[int]):
        for step in range(max(starts)):
            yield [f"{start - step};" if step < start else StopIteration for start in starts]

    async def __call__(self, request: Request) -> StreamingResponse:
        return StreamingResponse(self.countdown(int(request.query_params["n"])), media_type="text/plain")


def test_concurrent_handle_calls_are_answered_in_batches(serve_instance):
    handle = serve.run(Batcher.bind(), name="batched", route_prefix="/batched")
    responses = [handle.sized.remote(i) for i in range(8)]
    answers = [r.result(timeout_s=30) for r in responses]
    assert [item for item, _ in answers] == list(range(8)), "each caller gets its own item back"
    assert max(size for _, size in answers) == 4, "the batches filled"
    assert sum(handle.batch_sizes.remote().result()) == 8


def test_concurrent_http_requests_are_batched(serve_instance):
    serve.run(Batcher.bind(), name="batched-http", route_prefix="/batched")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(lambda i: requests.get(f"{URL}/batched", params={"i": i}, timeout=30).text, range(8)))
    assert [t.split(":")[0] for t in texts] == [str(i) for i in range(8)]
    assert max(int(t.split(":")[1]) for t in texts) > 1


def test_a_batched_generator_streams_each_caller_its_own_items(serve_instance):
    handle = serve.run(Batcher.bind(), name="batched-stream", route_prefix=None)
    streaming = handle.options(stream=True)
    short, long = streaming.countdown.remote(1), streaming.countdown.remote(3)
    assert list(short) == [1] and list(long) == [3, 2, 1]


def test_user_config_tunes_the_batch_size_live(serve_instance):
    handle = serve.run(Batcher.options(user_config={"max_batch_size": 2}).bind(), name="tuned", route_prefix=None)
    answers = [r.result(timeout_s=30) for r in [handle.sized.remote(i) for i in range(6)]]
    assert max(size for _, size in answers) == 2


def test_a_batched_generator_streams_over_http_as_a_streaming_response(serve_instance):
    serve.run(StreamingBatcher.bind(), name="batched-http-stream", route_prefix="/countdown")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        texts = list(pool.map(lambda n: requests.get(f"{URL}/countdown", params={"n": n}, timeout=30).text, (2, 4)))
    assert texts == ["2;1;", "4;3;2;1;"]
