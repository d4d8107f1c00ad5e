"""The caller's end of the channel: one connection to one replica, shared by concurrent requests."""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
from typing import Any, AsyncIterator, Callable

from serve_nb.common.serialization import dumps, loads, unpack_exception
from serve_nb.data.channel.frames import (
    MAX_FRAME_BYTES,
    Address,
    ConnectionLost,
    FrameProtocol,
    Kind,
    NotSent,
    Rejected,
    too_large,
)
from serve_nb.data.channel.body import pump_body
from serve_nb.data.request import BodySource, Request
from serve_nb.exceptions import ReplicaUnavailableError


class _Pending:
    """One request waiting for its reply: a future for a value, a queue for a stream."""

    __slots__ = ("future", "queue")

    def __init__(self, future: asyncio.Future[Any] | None, queue: asyncio.Queue[Any] | None) -> None:
        self.future = future
        self.queue = queue


class _ClientConnection(FrameProtocol):
    def __init__(self, owner: "ChannelClient") -> None:
        super().__init__()
        self._owner = owner
        self.max_frame = owner.max_frame

    def on_frame(self, kind: int, rid: int, payload: bytes) -> None:
        self._owner._on_frame(kind, rid, payload)

    def frame_too_large(self, kind: int, rid: int, length: int) -> None:
        self._owner._fail_one(rid, too_large("reply", length, self.max_frame))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._owner._on_lost(exc)


class ChannelClient:
    """A caller's connection to one replica; many concurrent requests share it.

    It connects on first use. Once the replica says GOODBYE or the connection is lost it is
    unusable for good (``on_unusable`` fires once) and the router makes a new one if needed.
    """

    _ids = itertools.count(1)

    def __init__(
        self, address: Address, token: bytes, *, local_node_id: str = "", max_frame: int = MAX_FRAME_BYTES
    ) -> None:
        self.address = address
        self._token = token
        self.max_frame = max_frame
        self._local = bool(address.uds_path) and address.node_id == local_node_id and bool(local_node_id)
        self._conn: _ClientConnection | None = None
        self._connecting: asyncio.Future[_ClientConnection] | None = None
        self._pending: dict[int, _Pending] = {}
        self.goodbye = False
        self.lost = False
        self.on_unusable: Callable[["ChannelClient"], None] | None = None

    @property
    def usable(self) -> bool:
        return not (self.goodbye or self.lost)

    async def _connection(self) -> _ClientConnection:
        conn = self._conn
        if conn is not None and not conn.closed and not self.goodbye:
            return conn
        if not self.usable:  # after GOODBYE the socket may stay open a moment: nothing more is run there
            raise NotSent("connection closed")
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _open(self) -> _ClientConnection:
        loop = asyncio.get_running_loop()
        try:
            if self._local and self.address.uds_path and os.path.exists(self.address.uds_path):
                _, conn = await loop.create_unix_connection(lambda: _ClientConnection(self), self.address.uds_path)
            else:
                _, conn = await loop.create_connection(
                    lambda: _ClientConnection(self), self.address.host, self.address.port
                )
        except OSError as exc:
            self.lost = True
            self._notify_unusable()
            raise NotSent(f"cannot connect to replica at {self.address.host}:{self.address.port}: {exc}") from exc
        conn.send(Kind.HELLO, 0, self._token)
        self._conn = conn
        return conn

    async def call(self, request: Request) -> Any:
        """Send one request and wait for its value; raises Rejected, NotSent, FrameTooLargeError, or
        the user's error."""
        payload = self._payload(request)
        conn = await self._connection()
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = _Pending(fut, None)
        conn.send(Kind.CALL, rid, payload)
        try:
            return await fut
        except asyncio.CancelledError:
            if rid in self._pending:
                conn.send(Kind.CANCEL, rid)
            raise
        finally:
            self._pending.pop(rid, None)

    async def stream(self, request: Request, body: BodySource | None = None) -> AsyncIterator[Any]:
        """Send a streaming request; yields items as the replica produces them. With ``body`` (the rest
        of a large HTTP body) the request waits to be admitted (ACCEPT) before the body is sent, so a
        REJECT leaves the body unread and the request can still go elsewhere."""
        payload = self._payload(request)
        conn = await self._connection()
        rid = next(self._ids)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._pending[rid] = _Pending(None, queue)
        conn.send(Kind.CALL, rid, payload)
        finished = False
        pump: asyncio.Task[None] | None = None
        try:
            first = True
            if body is not None:
                kind, value = await queue.get()
                if kind != Kind.ACCEPT:
                    finished = True
                    raise Rejected() if kind == Kind.REJECT else value
                send = functools.partial(self._send_piece, conn, rid)
                pump = asyncio.get_running_loop().create_task(pump_body(body.__aiter__(), send, conn.drain))
            while True:
                kind, value = await queue.get()
                if kind == Kind.CHUNK:
                    first = False
                    yield value
                elif kind == Kind.END:
                    finished = True
                    return
                elif kind == Kind.REJECT and first:
                    finished = True
                    raise Rejected()
                else:
                    finished = True
                    raise value
        finally:
            self._pending.pop(rid, None)
            if pump is not None and not pump.done():
                pump.cancel()  # the reply ended (or failed) before the app read the whole body
            if not finished and not conn.closed:
                conn.send(Kind.CANCEL, rid)

    @staticmethod
    def _send_piece(conn: _ClientConnection, rid: int, kind: int, piece: bytes) -> None:
        conn.send(kind, rid, piece)

    def _payload(self, request: Request) -> bytes:
        """The request on the wire; one the replica would refuse is refused here, with the reason,
        rather than sent to close the connection under every other request on it."""
        payload = dumps(request.to_wire())
        if len(payload) > self.max_frame:
            raise too_large("request", len(payload), self.max_frame)
        return payload

    def _fail_one(self, rid: int, exc: BaseException) -> None:
        pending = self._pending.pop(rid, None)
        if pending is None:
            return
        if pending.future is not None:
            if not pending.future.done():
                pending.future.set_exception(exc)
        elif pending.queue is not None:
            pending.queue.put_nowait((Kind.ERR, exc))

    def _on_frame(self, kind: int, rid: int, payload: bytes) -> None:
        if kind == Kind.GOODBYE:
            self.goodbye = True
            self._fail_all(NotSent("replica said goodbye before running the request"))
            self._notify_unusable()
            return
        if kind == Kind.DENIED:
            self.lost = True
            self._fail_all(ReplicaUnavailableError(f"replica refused the connection: {payload.decode(errors='replace')}"))
            return
        pending = self._pending.get(rid)
        if pending is None:
            return
        if pending.future is not None:
            fut = pending.future
            if fut.done():
                return
            if kind == Kind.OK:
                fut.set_result(loads(payload))
            elif kind == Kind.ERR:
                fut.set_exception(unpack_exception(payload))
            elif kind == Kind.REJECT:
                fut.set_exception(Rejected())
        else:
            assert pending.queue is not None
            if kind == Kind.CHUNK:
                pending.queue.put_nowait((kind, loads(payload)))
            elif kind == Kind.ERR:
                pending.queue.put_nowait((kind, unpack_exception(payload)))
            else:
                pending.queue.put_nowait((kind, None))

    def _fail_all(self, exc: BaseException) -> None:
        for pending in list(self._pending.values()):
            if pending.future is not None:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            elif pending.queue is not None:
                pending.queue.put_nowait((Kind.ERR, exc))
        self._pending.clear()

    def _on_lost(self, exc: Exception | None) -> None:
        if not self.goodbye:
            self.lost = True
            self._fail_all(
                ConnectionLost(
                    f"Lost the connection to the replica at {self.address.host}:{self.address.port} "
                    "while it was handling the request (the replica died or was killed)."
                )
            )
            self._notify_unusable()

    def _notify_unusable(self) -> None:
        if self.on_unusable is not None:
            cb, self.on_unusable = self.on_unusable, None
            cb(self)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
