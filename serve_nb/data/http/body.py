"""Request bodies in the proxy: a small body is read whole and travels inside its request; a large one is
read as the replica's channel takes it, so the proxy's memory does not grow with the body.

Up to ``INLINE_BODY_BYTES`` is read first. A body that ends by then goes inline (one frame; the request
can be sent again elsewhere if a replica refuses it). Past it, the part read so far goes inline and
``ClientBody`` streams the rest once a replica has admitted the request. What is read is kept as the
pieces the server delivered: a large head is never joined here, the channel writes its pieces as they are.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import AsyncIterator

from serve_nb.data.channel.buffers import OUT_OF_BAND_BYTES, Pieces
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

    data: bytes | Pieces
    more: bool


async def read_head(receive: Receive, limit: int | None, inline: int = INLINE_BODY_BYTES) -> BodyHead | None:
    """Read the body until it ends or passes ``inline`` bytes; None if the client went away first. A body
    of exactly ``inline`` bytes whose end comes in a message of its own (a chunked upload) is inline too."""
    pieces: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        piece: bytes = message.get("body", b"")
        size += len(piece)
        if limit is not None and size > limit:
            raise BodyTooLarge
        if piece:
            pieces.append(piece)
        more = message.get("more_body", False)
        if not more or size > inline:
            return BodyHead(_body(pieces, size), more)


def _body(pieces: list[bytes], size: int) -> bytes | Pieces:
    """A small body as one ``bytes`` (joining little is cheap, and most bodies are one piece anyway); a
    large one as its ``Pieces``, which the channel sends without copying them into the request."""
    if size >= OUT_OF_BAND_BYTES:
        return Pieces(pieces, size)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


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
