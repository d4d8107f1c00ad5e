"""The wire: frames on a byte stream, and what both ends of a channel share.

A frame is ``!IBQ`` (payload length, kind, request id) followed by the payload. The length is
checked against ``FrameProtocol.max_frame`` as soon as the header arrives, before any of the payload
is kept, so a peer cannot make this end buffer more than that limit (one integer compare per frame).

The socket is read into the protocol's own buffers (``asyncio.BufferedProtocol``): small frames are
parsed where they were read, several per read; a large payload is read straight into a buffer of its
own, so its bytes are copied once, by the kernel, on their way from the peer's memory to where the
receiver reads them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Sequence

from serve_nb.data.channel.liveness import enable_keepalive
from serve_nb.exceptions import ReplicaUnavailableError

HEADER = struct.Struct("!IBQ")

#: Below this size header and payload are joined into one write (one syscall, one segment);
#: above it ``writelines`` sends them apart, so a large payload is never copied.
SMALL_WRITE_BYTES = 64 * 1024

#: Frames with a payload up to this are parsed where they were read; a larger payload gets a buffer
#: of its own, which the rest of it is read into directly.
IN_PLACE_BYTES = 64 * 1024
#: The read buffer once the peer is trusted: room for several in-place frames per read. Before, it
#: is sized by the handshake's small ``max_frame``, so an unauthenticated connection holds little.
READ_BYTES = 4 * IN_PLACE_BYTES

#: Environment variable that overrides ``MAX_FRAME_BYTES`` (set it for the driver and, through
#: ``runtime_env``, for the replicas alike: each end enforces its own limit).
MAX_FRAME_ENV = "SERVE_NB_CHANNEL_MAX_FRAME_BYTES"
#: The largest payload one frame may carry once a caller has authenticated. Generous for model
#: serving (a batch of images, an audio clip, a few hundred MB of tensors) while far below the 4 GiB
#: the header could announce; larger data belongs in the object store (pass an ObjectRef).
MAX_FRAME_BYTES = int(os.environ.get(MAX_FRAME_ENV, "") or 512 * 1024 * 1024)


class Kind(IntEnum):
    """What a frame carries. Callers send 1 to 9 and PING; replicas send 10 to 19 and PONG; CREDIT goes both ways.

    A connection opens with HELLO, CHALLENGE, PROOF (see ``auth``); only then CALLs and replies."""

    HELLO = 1  # the caller's nonce, first on every connection
    CALL = 2  # a pickled Request
    CANCEL = 3  # the caller gave up on a request
    PROOF = 4  # the caller's proof that it holds the replica's key
    BODY = 5  # raw bytes: the next piece of an accepted request's streamed body
    BODY_END = 6  # the streamed body is complete
    CALL_BUFFERS = 7  # a CALL whose large buffers follow it as BUFFER frames (see ``buffers``)
    BUFFER = 8  # one buffer of the CALL_BUFFERS just sent
    MESSAGE = 9  # one pickled item a caller streams to an accepted duplex request (a WebSocket client's message)
    OK = 10  # a call's value
    ERR = 11  # the request raised (a packed exception)
    CHUNK = 12  # one item of a streamed reply
    END = 13  # a streamed reply is complete
    REJECT = 14  # not run (full or draining): retry elsewhere
    GOODBYE = 15  # every accepted request was answered; nothing more will run
    DENIED = 16  # the caller did not prove it holds the key; the connection closes
    CHALLENGE = 17  # the replica's nonce and its proof that it holds the key
    ACCEPT = 18  # a request whose body follows was admitted: send the body now (REJECT otherwise)
    RELEASE = 19  # the replica no longer reads a call's shared-memory segment (its name): the caller may reuse it
    CREDIT = 20  # a duplex request's receiver took items (count, bytes: see ``duplex``): its sender may send more
    PING = 21  # the caller heard nothing for a beat: is the replica still there? (empty; see ``liveness``)
    PONG = 22  # the replica's answer to PING (empty); any frame from the replica counts as a sign of life


@dataclass(frozen=True)
class Address:
    """Where a replica listens: TCP for anyone, a Unix socket for callers on the same node."""

    host: str
    port: int
    uds_path: str | None = None
    node_id: str = ""


class Rejected(Exception):
    """The replica did not run the request (at capacity or draining); safe to retry elsewhere."""


class NotSent(Exception):
    """The request never reached a replica that would run it (connect failed, or after GOODBYE)."""


class ConnectionLost(ReplicaUnavailableError):
    """The connection to the replica broke with the request in flight: it may or may not have run.
    Only calls the caller declared idempotent are sent again."""


class ForObjectStore(Exception):
    """Nothing was sent: the call carries enough data that Ray's object store moves it faster than this
    socket (``serialization.LARGE_PAYLOAD_BYTES``). The router sends it that way to the same replica."""


class FrameTooLargeError(ValueError):
    """A request or reply is larger than the channel carries; raised to the caller, never retried."""


def too_large(what: str, size: int, limit: int) -> FrameTooLargeError:
    """The error for a payload of ``size`` bytes over ``limit``, saying what to do about it."""
    return FrameTooLargeError(
        f"The {what} is {size / 2**20:.1f} MiB, over the channel's limit of {limit / 2**20:.1f} MiB per "
        f"message. Pass large data as an ObjectRef (ray.put) or raise the limit with {MAX_FRAME_ENV}."
    )


class FrameProtocol(asyncio.BufferedProtocol):
    """Parses frames from the byte stream and hands them to ``on_frame``; tracks write back-pressure.

    The transport reads into ``get_buffer``'s view and reports with ``buffer_updated``. Bytes read
    but not yet parsed are ``_view[_start:_end]``: always less than one in-place frame once parsing
    stops, because a longer frame has moved to ``_large`` (or was refused)."""

    #: Frames announcing a larger payload go to ``frame_too_large`` instead of being buffered.
    max_frame: int = MAX_FRAME_BYTES

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._view = memoryview(bytearray())
        self._start = 0
        self._end = 0
        self._large: bytearray | None = None  # the payload being read into its own buffer
        self._large_got = 0
        self._large_kind = 0
        self._large_rid = 0
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.closed = False
        self.max_frame = type(self).max_frame  # an instance attribute: the per-frame read is cheapest

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            enable_keepalive(sock)  # once per connection: a dead or cut-off host is noticed even when idle

    @property
    def buffered(self) -> int:
        """Bytes read from the peer and kept, not yet handed over as frames."""
        return self._end - self._start + (self._large_got if self._large is not None else 0)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._large is not None:
            return memoryview(self._large)[self._large_got :]
        if len(self._view) - self._end < HEADER.size + min(self.max_frame, IN_PLACE_BYTES):
            self._make_room()
        return self._view[self._end :]

    def _make_room(self) -> None:
        """Move the unparsed bytes (less than one in-place frame) to the front of a buffer sized for the
        current ``max_frame``, leaving room for a whole in-place frame after them."""
        tail = bytes(self._view[self._start : self._end])
        size = min(READ_BYTES, 4 * (HEADER.size + self.max_frame))
        if len(self._view) != size:
            self._view = memoryview(bytearray(size))
        self._view[: len(tail)] = tail
        self._start, self._end = 0, len(tail)

    def buffer_updated(self, nbytes: int) -> None:
        if self.closed:
            return
        if self._large is None:
            self._end += nbytes
            self._parse()
            return
        self._large_got += nbytes
        if self._large_got == len(self._large):
            payload, self._large = self._large, None
            self.on_frame(self._large_kind, self._large_rid, payload)

    def _parse(self) -> None:
        view, end, size = self._view, self._end, HEADER.size
        off = self._start
        while end - off >= size:
            length, kind, rid = HEADER.unpack_from(view, off)
            if length > self.max_frame:  # read each time: a PROOF in this same read raises it
                self._start = self._end = 0  # drop what was read; nothing more is parsed here
                self.frame_too_large(kind, rid, length)
                self.close()
                return
            start = off + size
            if end - start < length:
                if length > IN_PLACE_BYTES:
                    self._read_large(kind, rid, length, start)
                    return
                break
            off = start + length
            self.on_frame(kind, rid, bytes(view[start:off]))
            if self.closed:
                return
        self._start, self._end = (0, 0) if off == end else (off, end)

    def _read_large(self, kind: int, rid: int, length: int, start: int) -> None:
        """Give a large payload its own buffer, holding what was read of it; the rest is read into it."""
        payload = bytearray(length)
        got = self._end - start
        payload[:got] = self._view[start : self._end]
        self._large, self._large_got, self._large_kind, self._large_rid = payload, got, kind, rid
        self._start = self._end = 0

    def on_frame(self, kind: int, rid: int, payload: bytes | bytearray) -> None:  # pragma: no cover - abstract
        """One whole frame: ``bytes``, or a ``bytearray`` for a payload over ``IN_PLACE_BYTES``."""
        raise NotImplementedError

    def frame_too_large(self, kind: int, rid: int, length: int) -> None:
        """A header announced more than ``max_frame``; the connection closes right after this (the
        stream cannot be followed without reading the payload). Say why to the peer, if useful."""

    def send(self, kind: int, rid: int, payload: bytes | memoryview = b"") -> None:
        if self.closed or self.transport is None:
            return
        header = HEADER.pack(len(payload), kind, rid)
        if len(payload) < SMALL_WRITE_BYTES:
            self.transport.write(header + payload)
        else:
            self.transport.writelines((header, payload))

    def send_frames(self, frames: Sequence[tuple[int, int, Sequence[bytes | memoryview]]]) -> None:
        """Frames of (kind, request id, payload parts), written together in order with one ``writelines``
        (one ``writev``): every part is written from where it is, none is joined into a larger buffer."""
        if self.closed or self.transport is None:
            return
        out: list[bytes | memoryview] = []
        for kind, rid, parts in frames:
            out.append(HEADER.pack(sum(len(part) for part in parts), kind, rid))
            out.extend(parts)
        self.transport.writelines(out)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        for w in self._drain_waiters:
            if not w.done():
                w.set_result(None)
        self._drain_waiters.clear()

    async def drain(self) -> None:
        """Wait while the transport's buffer is over its high-water mark (a slow reader)."""
        if self._paused and not self.closed:
            fut = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(fut)
            await fut

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.resume_writing()

    def close(self) -> None:
        """Close after flushing what was written; frames still unparsed or arriving later are ignored."""
        if not self.closed:
            self.closed = True  # at once: connection_lost only comes on a later loop iteration
            if self.transport is not None:
                self.transport.close()
