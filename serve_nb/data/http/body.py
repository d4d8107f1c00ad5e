"""Request bodies in the proxy: a small body is read whole and travels inside its request; a large one is
read as the replica's channel takes it, so the proxy's memory does not grow with the body.

Up to ``INLINE_BODY_BYTES`` is read first. A body that ends by then goes inline (one frame; the request
can be sent again elsewhere if a replica refuses it). Past it, the part read so far goes inline and
``ClientBody`` streams the rest once a replica has admitted the request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import AsyncIterator

from serve_nb.data.http.asgi import Headers, Message, Receive

#: Bodies up to this size travel inside their request; larger ones are streamed. Large enough that
#: ordinary JSON and form posts never pay for streaming, small enough that the proxy holds little.
INLINE_BODY_BYTES = 1 * 2**20


class BodyTooLarge(Exception):
    """The body grew past ``max_body_bytes`` while it was read (chunked, or a lying Content-Length)."""


class ClientGone(Exception):
    """The client disconnected before it had sent the whole body."""


def declared_length(headers: Headers) -> int | None:
    """The Content-Length the client declared (the parser has already rejected malformed ones)."""
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


@dataclass
class BodyHead:
    """What was read before forwarding: the body (``more`` False) or its first part (``more`` True)."""

    data: bytes | bytearray
    more: bool


async def read_head(receive: Receive, limit: int | None, inline: int = INLINE_BODY_BYTES) -> BodyHead | None:
    """Read the body until it ends or passes ``inline`` bytes; None if the client went away first.

    One message (every small body) is passed on as it came; longer heads grow one bytearray in place
    rather than keeping pieces and joining them (which would hold them twice)."""
    message = await receive()
    if message["type"] == "http.disconnect":
        return None
    first: bytes = message.get("body", b"")
    if limit is not None and len(first) > limit:
        raise BodyTooLarge
    if not message.get("more_body", False):
        return BodyHead(first, False)
    head = bytearray(first)
    while len(head) < inline:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        head += message.get("body", b"")
        if limit is not None and len(head) > limit:
            raise BodyTooLarge
        if not message.get("more_body", False):
            return BodyHead(head, False)
    return BodyHead(head, True)


class ClientBody:
    """The rest of a large body, read from the client only as it is sent on (a ``BodySource``).

    ``outcome`` resolves when the reading stops: None once the body is complete, else why it stopped
    (``BodyTooLarge``, ``ClientGone``, or the reader was closed because the reply ended first)."""

    def __init__(self, receive: Receive, received: int, limit: int | None) -> None:
        self.started = False
        self.outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self._receive = receive
        self._received = received
        self._limit = limit

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[bytes]:
        self.started = True
        try:
            while True:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                piece: bytes = message.get("body", b"")
                self._received += len(piece)
                if self._limit is not None and self._received > self._limit:
                    raise BodyTooLarge
                if piece:
                    yield piece
                if not message.get("more_body", False):
                    break
        except BaseException as exc:
            self._settle(exc)
            raise
        self._settle(None)

    def _settle(self, why: BaseException | None) -> None:
        if not self.outcome.done():
            self.outcome.set_result(why)


async def watch_client(receive: Receive, body: ClientBody | None) -> Message | BaseException:
    """Resolves when the request should end early: the client disconnected (its ``http.disconnect``
    message), or its streamed body failed (``BodyTooLarge`` / ``ClientGone``). Calls ``receive`` only
    once nothing else reads the body, as ASGI requires."""
    if body is not None:
        why = await body.outcome
        if isinstance(why, (BodyTooLarge, ClientGone)):
            return why
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return message  # (a body the app left unread is drained meanwhile)
