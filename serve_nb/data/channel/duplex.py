"""Duplex requests: items flow both ways for as long as a request lasts (a WebSocket's messages).

Many requests share one connection, so TCP's own back-pressure cannot hold back one of them without
holding back all. Each direction of a duplex request has a window instead: the sender counts the items
(and their bytes) it sent that the receiver has not yet reported taken, and sends only while both counts
are under the window's bounds. The receiver reports what its consumer took in CREDIT frames, once half a
window's worth has been taken (one small frame per several items, not one per item). So neither end ever
holds more than a window (plus one item) of a request, however slow the other end's consumer is: a
WebSocket client that sends faster than the app reads is no longer read from, and an app that sends
faster than its client reads waits in ``send``, as it would under uvicorn.

The caller opens the request with a CALL; once the replica ACCEPTs it, the caller sends its items as
MESSAGE frames and, when its source ends, BODY_END. Items going back are the reply's CHUNK frames.
Items are plain values (ASGI message dicts): pickled with ``pickle``, not cloudpickle.
"""

from __future__ import annotations

import asyncio
import collections
import pickle
import struct
from typing import Any, AsyncIterator, Awaitable, Callable

from serve_nb.data.channel.frames import Kind

#: A window's bounds: items in flight one way, and their bytes. Enough to keep a fast stream of small
#: messages moving without waiting for credit; small enough that a stalled side holds little.
WINDOW_ITEMS = 16
WINDOW_BYTES = 1024 * 1024
#: A CREDIT frame's payload: how many items were taken, and their bytes.
CREDIT = struct.Struct("!II")


class Window:
    """The sender's side of one direction: what was sent and not yet reported taken."""

    __slots__ = ("max_items", "max_bytes", "items", "bytes", "closed", "_waiter")

    def __init__(self, max_items: int = WINDOW_ITEMS, max_bytes: int = WINDOW_BYTES) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.items = 0
        self.bytes = 0
        self.closed = False
        self._waiter: asyncio.Future[None] | None = None

    @property
    def has_room(self) -> bool:
        """Another item may go: both counts are under their bounds (one item may then pass the bytes bound)."""
        return self.items < self.max_items and self.bytes < self.max_bytes

    async def room(self) -> None:
        """Wait until another item may be sent (or the window is closed: the request ended)."""
        while not self.has_room and not self.closed:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def spend(self, nbytes: int) -> None:
        self.items += 1
        self.bytes += nbytes

    def credit(self, payload: bytes | bytearray) -> bool:
        """Take a CREDIT frame's payload; False if it is malformed (it is then ignored). A credit for more
        than is in flight only empties the window: it cannot make room beyond it."""
        if len(payload) != CREDIT.size:
            return False
        items, nbytes = CREDIT.unpack(payload)
        self.items = max(0, self.items - items)
        self.bytes = max(0, self.bytes - nbytes)
        self._wake()
        return True

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Grants:
    """The receiver's side of one direction: counts what its consumer took, and says so in a CREDIT
    payload once half a window's worth (in items or in bytes) has been taken."""

    __slots__ = ("_send_credit", "_half_items", "_half_bytes", "_items", "_bytes")

    def __init__(
        self, send_credit: Callable[[bytes], None], max_items: int = WINDOW_ITEMS, max_bytes: int = WINDOW_BYTES
    ) -> None:
        self._send_credit = send_credit
        self._half_items = max(1, max_items // 2)
        self._half_bytes = max(1, max_bytes // 2)
        self._items = 0
        self._bytes = 0

    def took(self, nbytes: int) -> None:
        """The consumer took one item of ``nbytes``. Credit goes out at half a window, never later: a
        sender that is stalled has a whole window out, so the consumer that took it all has sent credit."""
        self._items += 1
        self._bytes += nbytes
        if self._items >= self._half_items or self._bytes >= self._half_bytes:
            self._send_credit(CREDIT.pack(self._items, self._bytes))
            self._items = self._bytes = 0


class EndOfItems(Exception):
    """The caller's items are over: it sent BODY_END, or the request ended."""


class ReceivedItems:
    """The replica's end of a duplex request: the caller's items, queued for the consumer as they arrive,
    and the window for the items the replica sends back (its reply's CHUNKs).

    The queue holds what the caller's window allowed it to send, no more: ``feed`` refuses an item past
    that (a caller that does not respect the window), and the server then ends the request."""

    __slots__ = ("outbound", "_grants", "_queue", "_queued_bytes", "_max_items", "_max_bytes", "_waiter", "ended")

    def __init__(
        self, send_credit: Callable[[bytes], None], max_items: int = WINDOW_ITEMS, max_bytes: int = WINDOW_BYTES
    ) -> None:
        self.outbound = Window(max_items, max_bytes)
        self._grants = Grants(send_credit, max_items, max_bytes)
        self._queue: collections.deque[bytes | bytearray] = collections.deque()
        self._queued_bytes = 0
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._waiter: asyncio.Future[None] | None = None
        #: The caller said its items are over (BODY_END) or the request ended; queued ones are still taken.
        self.ended = False

    def feed(self, payload: bytes | bytearray) -> bool:
        """Queue one item's pickle; False if the caller sent past its window or after its end."""
        if self.ended or len(self._queue) >= self._max_items or self._queued_bytes >= self._max_bytes:
            return False
        self._queue.append(payload)
        self._queued_bytes += len(payload)
        self._wake()
        return True

    def end(self) -> None:
        """No more items will come; the consumer still takes those queued, then gets EndOfItems."""
        self.ended = True
        self._wake()

    def close(self) -> None:
        """The request is over: drop what is queued, and let a sender waiting for room go."""
        self.end()
        self._queue.clear()
        self._queued_bytes = 0
        self.outbound.close()

    async def take(self) -> Any:
        """The next item, once it has arrived; EndOfItems once they are over. Taking it is what grants
        the caller room for another."""
        while not self._queue:
            if self.ended:
                raise EndOfItems
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        payload = self._queue.popleft()
        self._queued_bytes -= len(payload)
        self._grants.took(len(payload))
        return pickle.loads(payload)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


async def pump_items(
    items: AsyncIterator[Any],
    send: Callable[[int, bytes], None],
    drain: Callable[[], Awaitable[None]],
    window: Window,
    max_frame: int,
) -> None:
    """The caller's end: send each item as a MESSAGE frame when the window has room, then BODY_END once
    the source ends. Room is awaited before the next item is asked for, so a source that reads a client
    (a WebSocket) stops reading it while the replica's consumer lags.

    If the source fails (the client went away abruptly) the pump stops without BODY_END: the source
    reports its own failure to whoever forwards the request. An item over ``max_frame`` (the proxy bounds a
    WebSocket message below it unless ``max_body_bytes`` is off) ends the items there, as if the source had
    ended: the replica's consumer learns that no more will come instead of waiting for them."""
    iterator = items.__aiter__()
    try:
        while True:
            await window.room()
            try:
                item = await iterator.__anext__()
            except StopAsyncIteration:
                break
            payload = pickle.dumps(item, protocol=5)
            if len(payload) > max_frame:
                break
            window.spend(len(payload))
            send(Kind.MESSAGE, payload)
            await drain()
    except Exception:  # noqa: BLE001 - the source's failure is handled where it was raised
        return
    send(Kind.BODY_END, b"")
