"""A large body streamed after its request over real sockets: sent only once the replica admits the
request, delivered in order, never read when the replica refuses, stopped when the reply ends first."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable

import pytest
from test_channel_round_trip import FakeReplica, call, scenario

from serve_nb.data.channel import ChannelClient, ChannelServer, Rejected
from serve_nb.data.channel.body import BODY_PIECE_BYTES
from serve_nb.data.request import Request


class Body:
    """A BodySource: ``count`` pieces of ``size`` bytes, counting what was read."""

    def __init__(self, count: int, size: int) -> None:
        self.started = False
        self.read = 0
        self._count, self._size = count, size

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[bytes]:
        self.started = True
        for i in range(self._count):
            self.read += 1
            yield bytes([i % 256]) * self._size


class BodyReplica(FakeReplica):
    """Answers an HTTP request with what it received: (head, pieces as lengths and first bytes); with
    ``answer_early`` it answers without reading the body at all."""

    answer_early = False

    def handle(self, request: Request) -> Awaitable[Any] | AsyncIterator[Any]:
        if request.args and request.args[0] == "http":
            self.requests.append(request)
            return self._receive(request)
        return super().handle(request)

    async def _receive(self, request: Request) -> AsyncIterator[Any]:
        _, head, _, rest = request.args
        if self.answer_early:
            yield "early"
            return
        pieces = [(len(p), p[0]) async for p in rest]
        yield (head, pieces)


def http(head: bytes) -> Request:
    return Request.http("http", head, False, more=True)  # type: ignore[arg-type] - the fake reads a string scope


def run(test: Any, capacity: int = 10) -> Any:
    return scenario(test, capacity=capacity, replica_cls=BodyReplica)


def test_the_body_follows_its_request_in_order_and_whole():
    async def test(replica: BodyReplica, server: ChannelServer, client: ChannelClient) -> None:
        body = Body(count=5, size=BODY_PIECE_BYTES * 2 + 7)  # larger than a frame's piece: split on the way
        [(head, pieces)] = [item async for item in client.stream(http(b"head"), body)]
        assert head == b"head"
        sizes = [BODY_PIECE_BYTES, BODY_PIECE_BYTES, 7] * 5
        assert [n for n, _ in pieces] == sizes
        assert [first for _, first in pieces] == [i for i in range(5) for _ in range(3)]
        assert replica.ongoing == 0

    run(test)


def test_a_refused_request_leaves_its_body_unread_so_it_can_go_elsewhere():
    async def test(replica: BodyReplica, server: ChannelServer, client: ChannelClient) -> None:
        blocker = asyncio.ensure_future(client.call(call("block")))
        await replica.blocked.wait()
        body = Body(count=3, size=10)
        with pytest.raises(Rejected):
            async for _ in client.stream(http(b"h"), body):
                pass
        assert not body.started and body.read == 0
        replica.gate.set()
        await blocker
        [(_, pieces)] = [item async for item in client.stream(http(b"h"), body)]
        assert len(pieces) == 3

    run(test, capacity=1)


def test_a_reply_that_ends_first_stops_the_body():
    async def test(replica: BodyReplica, server: ChannelServer, client: ChannelClient) -> None:
        replica.answer_early = True
        body = Body(count=10_000, size=BODY_PIECE_BYTES)  # 2.5 GiB if it were all sent
        assert [item async for item in client.stream(http(b"h"), body)] == ["early"]
        await asyncio.sleep(0)
        read = body.read
        for _ in range(20):
            await asyncio.sleep(0)
        assert body.read == read < 10_000, "nothing more is read once the reply is over"
        assert await client.call(call("echo", 1)) == ((1,), {}), "the connection is still good"

    run(test)
