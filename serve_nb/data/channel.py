"""The data plane: a persistent, multiplexed socket between a caller (handle or proxy) and a replica.

One Ray actor call costs about a millisecond; a frame on an open socket costs tens of
microseconds. Ray still places, starts and stops replicas; requests travel here.

Frames are ``!IBQ`` (payload length, kind, request id) followed by the payload. Guarantees:
- REJECT means the replica did not run the request (full or draining): the caller may retry.
- GOODBYE is sent once every accepted request was answered; anything the caller sent after it
  was never run, so a caller may retry it elsewhere. Only a connection lost without GOODBYE
  leaves requests in doubt.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import os
import socket
import struct
import tempfile
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol

from serve_nb.exceptions import ReplicaUnavailableError, RequestCancelledError
from serve_nb.common.serialization import dumps, loads, pack_exception, unpack_exception

HEADER = struct.Struct("!IBQ")
_SMALL = 64 * 1024


class Kind(IntEnum):
    HELLO = 1
    CALL = 2
    CANCEL = 3
    OK = 10
    ERR = 11
    CHUNK = 12
    END = 13
    REJECT = 14
    GOODBYE = 15
    DENIED = 16


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
        if len(payload) < _SMALL:
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


# ---------------------------------------------------------------------------------------------
# Server side (inside a replica)


class RequestHandler(Protocol):
    def try_acquire(self) -> bool:
        """Reserve a slot for one request; False means reject it (full or draining)."""

    def release(self) -> None: ...

    def handle(self, method: str, args: tuple, kwargs: dict, meta: dict) -> Awaitable[Any] | AsyncIterator[Any]: ...


class _ServerConnection(FrameProtocol):
    def __init__(self, server: "ChannelServer") -> None:
        super().__init__()
        self._server = server
        self._authenticated = False
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self.goodbye_sent = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._server._connections.add(self)

    def on_frame(self, kind: int, rid: int, payload: bytes) -> None:
        if not self._authenticated:
            if kind == Kind.HELLO and hmac.compare_digest(payload, self._server.token):
                self._authenticated = True
            else:
                self.send(Kind.DENIED, rid, b"bad or missing channel token")
                self.close()
            return
        if kind == Kind.CALL:
            if self.goodbye_sent or not self._server.handler.try_acquire():
                self.send(Kind.REJECT, rid)
                return
            self._tasks[rid] = asyncio.get_running_loop().create_task(self._run(rid, payload))
        elif kind == Kind.CANCEL:
            task = self._tasks.get(rid)
            if task is not None:
                task.cancel()

    async def _run(self, rid: int, payload: bytes) -> None:
        handler = self._server.handler
        try:
            method, args, kwargs, meta = loads(payload)
            if meta.get("stream"):
                agen = handler.handle(method, args, kwargs, meta)
                async for item in agen:  # type: ignore[union-attr]
                    self.send(Kind.CHUNK, rid, dumps(item))
                    await self.drain()
                self.send(Kind.END, rid)
            else:
                result = await handler.handle(method, args, kwargs, meta)  # type: ignore[misc]
                self.send(Kind.OK, rid, dumps(result))
        except asyncio.CancelledError:
            self.send(Kind.ERR, rid, pack_exception(RequestCancelledError("The request was cancelled.")))
        except BaseException as exc:  # noqa: BLE001 - every user error goes back to the caller
            self.send(Kind.ERR, rid, pack_exception(exc))
        finally:
            self._tasks.pop(rid, None)
            handler.release()
            self._server._on_request_done()

    def say_goodbye(self) -> None:
        if not self.goodbye_sent:
            self.goodbye_sent = True
            self.send(Kind.GOODBYE, 0)

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._server._connections.discard(self)
        for task in list(self._tasks.values()):
            task.cancel()  # the caller is gone: stop its work


class ChannelServer:
    """Accepts callers on TCP (and a Unix socket for same-node callers) and runs their requests."""

    def __init__(self, handler: RequestHandler, token: bytes) -> None:
        self.handler = handler
        self.token = token
        self._connections: set[_ServerConnection] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._idle = asyncio.Event()
        self._uds_path: str | None = None

    async def start(self, host: str, node_id: str = "", use_uds: bool = True) -> Address:
        loop = asyncio.get_running_loop()
        tcp = await loop.create_server(lambda: _ServerConnection(self), host=host, port=0, backlog=1024)
        self._servers.append(tcp)
        port = tcp.sockets[0].getsockname()[1]
        uds = None
        if use_uds and hasattr(socket, "AF_UNIX"):
            path = os.path.join(tempfile.gettempdir(), f"serve_nb-{os.getpid()}-{port}.sock")
            try:
                if os.path.exists(path):
                    os.unlink(path)
                self._servers.append(await loop.create_unix_server(lambda: _ServerConnection(self), path=path))
                uds = self._uds_path = path
            except OSError:
                uds = None
        return Address(host=host, port=port, uds_path=uds, node_id=node_id)

    def _on_request_done(self) -> None:
        if not any(c.busy for c in self._connections):
            self._idle.set()

    async def close_gracefully(self) -> None:
        """Stop accepting, say GOODBYE on every connection once it is idle, then close."""
        for srv in self._servers:
            srv.close()
        while any(c.busy for c in self._connections):
            self._idle.clear()
            await self._idle.wait()
        for conn in list(self._connections):
            conn.say_goodbye()
            conn.close()
        if self._uds_path and os.path.exists(self._uds_path):
            os.unlink(self._uds_path)

    def abort(self) -> None:
        """The drain took too long: drop every connection (their requests fail as lost)."""
        for srv in self._servers:
            srv.close()
        for conn in list(self._connections):
            conn.close()
        if self._uds_path and os.path.exists(self._uds_path):
            os.unlink(self._uds_path)


# ---------------------------------------------------------------------------------------------
# Client side (in a router)


class _Pending:
    __slots__ = ("future", "queue")

    def __init__(self, future: asyncio.Future[Any] | None, queue: asyncio.Queue[Any] | None) -> None:
        self.future = future
        self.queue = queue


_STREAM_END = object()


class _ClientConnection(FrameProtocol):
    def __init__(self, owner: "ChannelClient") -> None:
        super().__init__()
        self._owner = owner

    def on_frame(self, kind: int, rid: int, payload: bytes) -> None:
        self._owner._on_frame(kind, rid, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._owner._on_lost(exc)


class ChannelClient:
    """A caller's connection to one replica; many concurrent requests share it."""

    _ids = itertools.count(1)

    def __init__(self, address: Address, token: bytes, *, local_node_id: str = "") -> None:
        self.address = address
        self._token = token
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
        if self._conn is not None and not self._conn.closed:
            return self._conn
        if not self.usable:
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

    async def call(self, method: str, args: tuple, kwargs: dict, meta: dict) -> Any:
        """Send one request and wait for its value; raises Rejected, NotSent, or the user's error."""
        conn = await self._connection()
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = _Pending(fut, None)
        conn.send(Kind.CALL, rid, dumps((method, args, kwargs, meta)))
        try:
            return await fut
        except asyncio.CancelledError:
            if rid in self._pending:
                conn.send(Kind.CANCEL, rid)
            raise
        finally:
            self._pending.pop(rid, None)

    async def stream(self, method: str, args: tuple, kwargs: dict, meta: dict) -> AsyncIterator[Any]:
        """Send a streaming request; yields items as the replica produces them."""
        conn = await self._connection()
        rid = next(self._ids)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._pending[rid] = _Pending(None, queue)
        conn.send(Kind.CALL, rid, dumps((method, args, {**kwargs}, {**meta, "stream": True})))
        finished = False
        try:
            first = True
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
            if not finished and not conn.closed:
                conn.send(Kind.CANCEL, rid)

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
                ReplicaUnavailableError(
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
