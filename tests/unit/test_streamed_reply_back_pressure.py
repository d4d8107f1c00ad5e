"""A streamed reply (an HTTP response, a handle's ``stream=True`` call) is held to one window by a caller that
stops taking it: the replica's generator waits instead of the caller queueing without bound. Over a real
channel on 127.0.0.1, no Ray."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from channel_peer import CountingSlots, over_channel
from loop_turns import until
from serve_nb.data.channel import ChannelClient
from serve_nb.data.channel.duplex import WINDOW_BYTES, WINDOW_ITEMS
from serve_nb.data.request import Request, RequestKind

WAIT_S = 10.0


class Counting(CountingSlots):
    """A RequestHandler whose streamed reply is endless numbered items of ``item_bytes`` each."""

    def __init__(self, item_bytes: int = 10) -> None:
        super().__init__()
        self.produced = 0
        self.item_bytes = item_bytes
        self.closed = asyncio.Event()

    def handle(self, request: Request) -> AsyncIterator[Any]:
        return self._items()

    async def _items(self) -> AsyncIterator[Any]:
        try:
            while True:
                self.produced += 1
                yield (self.produced, b"x" * self.item_bytes)
        finally:
            self.closed.set()


def streamed_call() -> Request:
    return Request(RequestKind.STREAM, "__call__", (), {})


def serve(test: Any, handler: Counting) -> Any:
    return over_channel(handler, lambda server, client: test(client), WAIT_S)


async def settle(handler: Counting) -> int:
    """Let the loop run well past what producing further items would take; what was produced by then."""
    for _ in range(500):
        await asyncio.sleep(0)
    return handler.produced


def test_a_caller_that_stops_taking_a_streamed_reply_holds_the_replica_to_one_window():
    handler = Counting()

    async def test(client: ChannelClient) -> None:
        replies = client.stream(streamed_call())
        assert (await replies.__anext__())[0] == 1  # then the caller takes nothing more
        await until(lambda: handler.produced >= WINDOW_ITEMS, "a window's worth produced")
        stalled = await settle(handler)
        assert stalled <= WINDOW_ITEMS + 2, stalled  # the window, and the item in the producer's hand
        got = [(await replies.__anext__())[0] for _ in range(5 * WINDOW_ITEMS)]  # taking again resumes it
        assert got == list(range(2, 5 * WINDOW_ITEMS + 2))
        await replies.aclose()
        await until(handler.closed.is_set, "the producer closed when the caller left")
        await until(lambda: handler.ongoing == 0, "the slot freed")

    serve(test, handler)


def test_a_streamed_reply_of_large_items_is_held_to_the_windows_bytes():
    handler = Counting(item_bytes=WINDOW_BYTES // 4)

    async def test(client: ChannelClient) -> None:
        replies = client.stream(streamed_call())
        await replies.__anext__()
        stalled = await settle(handler)
        assert 4 <= stalled <= 7, stalled  # about one window of bytes, however many items that is
        await replies.aclose()

    serve(test, handler)
