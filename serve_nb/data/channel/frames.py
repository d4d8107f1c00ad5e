"""The wire: frames on a byte stream, and what both ends of a channel share.

A frame is ``!IBQ`` (payload length, kind, request id) followed by the payload.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass
from enum import IntEnum

HEADER = struct.Struct("!IBQ")

#: Below this size header and payload are joined into one write (one syscall, one segment);
#: above it ``writelines`` sends them apart, so a large payload is never copied.
SMALL_WRITE_BYTES = 64 * 1024


class Kind(IntEnum):
    """What a frame carries. Callers send the first three; replicas send the rest."""

    HELLO = 1  # the channel token, first on every connection
    CALL = 2  # a pickled Request
    CANCEL = 3  # the caller gave up on a request
    OK = 10  # a call's value
    ERR = 11  # the request raised (a packed exception)
    CHUNK = 12  # one item of a streamed reply
    END = 13  # a streamed reply is complete
    REJECT = 14  # not run (full or draining): retry elsewhere
    GOODBYE = 15  # every accepted request was answered; nothing more will run
    DENIED = 16  # bad or missing token; the connection closes


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


class FrameProtocol(asyncio.Protocol):
    """Parses frames from the byte stream and hands them to ``on_frame``; tracks write back-pressure."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        off = 0
        end = len(buf)
        size = HEADER.size
        while end - off >= size:
            length, kind, rid = HEADER.unpack_from(buf, off)
            if end - off - size < length:
                break
            start = off + size
            payload = bytes(buf[start : start + length])
            off = start + length
            self.on_frame(kind, rid, payload)
            if self.closed:
                return
        if off:
            del buf[:off]

    def on_frame(self, kind: int, rid: int, payload: bytes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def send(self, kind: int, rid: int, payload: bytes = b"") -> None:
        if self.closed or self.transport is None:
            return
        header = HEADER.pack(len(payload), kind, rid)
        if len(payload) < SMALL_WRITE_BYTES:
            self.transport.write(header + payload)
        else:
            self.transport.writelines((header, payload))

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
        if self.transport is not None and not self.closed:
            self.transport.close()
