"""A request body streamed over the channel: the caller's pump and the replica's receiving end.

A large HTTP body is not sent inside its request: the request goes first, announcing that its body's
remainder follows; the replica admits it (ACCEPT) or not (REJECT, and nothing was read, so the caller
may still send it elsewhere), and only then does the caller send the body, a piece at a time, as the
client uploads it. Neither end ever holds more than the pieces in flight, so the proxy's memory does
not grow with the body's size.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Awaitable, Callable

from serve_nb.data.channel.frames import Kind

#: Largest piece sent in one BODY frame: pieces larger than this (a client's big write) are split, so
#: requests sharing the connection interleave with a long upload instead of waiting behind it.
BODY_PIECE_BYTES = 256 * 1024

_END = None


class ReceivedBody:
    """The replica's end: pieces arrive from the connection (``feed``/``end``), the app reads them in
    order. Iterating yields each piece once; the iteration ends with the body."""

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def feed(self, piece: bytes | bytearray) -> None:
        """Queue one piece as ``bytes``, what ASGI apps expect (a large frame arrives as a bytearray)."""
        self._queue.put_nowait(piece if type(piece) is bytes else bytes(piece))

    def end(self) -> None:
        self._queue.put_nowait(_END)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[bytes]:
        while True:
            piece = await self._queue.get()
            if piece is _END:
                return
            yield piece


async def pump_body(
    pieces: AsyncIterator[bytes],
    send: Callable[[int, bytes | memoryview], None],
    drain: Callable[[], Awaitable[None]],
) -> None:
    """Send every piece of a body as BODY frames, then BODY_END, respecting the socket's back-pressure.

    If the body's source fails (the client left, or sent more than allowed) the pump stops without
    BODY_END: the source reports its own failure to whoever forwards the request, which cancels it."""
    try:
        async for piece in pieces:
            if len(piece) <= BODY_PIECE_BYTES:
                send(Kind.BODY, piece)
                await drain()
                continue
            view = memoryview(piece)  # its slices are written as they are, not copied
            for start in range(0, len(view), BODY_PIECE_BYTES):
                send(Kind.BODY, view[start : start + BODY_PIECE_BYTES])
                await drain()
    except Exception:  # noqa: BLE001 - the source's failure is handled where it was raised
        return
    send(Kind.BODY_END, b"")
