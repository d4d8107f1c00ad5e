"""The caller's end of the channel: one connection to one replica, shared by concurrent requests.

A connection is usable once the replica has proven it holds the replica's key (``auth``); until then
no request is sent and nothing it sends is unpickled.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import os
import ssl
from typing import Any, AsyncIterator, Callable

from serve_nb.common.serialization import LARGE_PAYLOAD_BYTES, dumps, dumps_unless_large, loads, unpack_exception
from serve_nb.data.channel import auth, buffers, liveness
from serve_nb.data.channel.body import pump_body
from serve_nb.data.channel.duplex import Grants, Window, pump_items
from serve_nb.data.channel.frames import (
    ForObjectStore,
    MAX_FRAME_BYTES,
    Address,
    ConnectionLost,
    FrameProtocol,
    Kind,
    NotSent,
    Rejected,
    too_large,
)
from serve_nb.data.channel.shm import SHARED_MEMORY_BYTES, ShmArena
from serve_nb.data.request import BodySource, Request
from serve_nb.exceptions import ReplicaUnavailableError


class _Pending:
    """One request waiting for its reply: a future for a value, a queue for a stream. A duplex request
    (a WebSocket) also has the window of what it sends, and counts what its consumer takes of the reply
    (``grants``, with each queued item's size in ``sizes``) to give the replica room to send more."""

    __slots__ = ("future", "queue", "window", "grants", "sizes")

    def __init__(self, future: asyncio.Future[Any] | None, queue: asyncio.Queue[Any] | None) -> None:
        self.future = future
        self.queue = queue
        self.window: Window | None = None
        self.grants: Grants | None = None
        self.sizes: collections.deque[int] | None = None


#: The largest frame read before the replica has proven itself: a CHALLENGE, or a short DENIED.
MAX_HANDSHAKE_FRAME = 256
#: The replica answers HELLO at once; a connection whose handshake has not ended by then is given up.
HANDSHAKE_TIMEOUT_S = 5.0


class _ClientConnection(FrameProtocol):
    """Says HELLO as soon as it is connected. ``trusted`` once the replica has proven it holds the key
    (the PROOF is then sent); ``handshake`` resolves then, or fails with why it did not."""

    max_frame = MAX_HANDSHAKE_FRAME  # until the replica has proven itself; then the caller's limit

    def __init__(self, owner: "ChannelClient") -> None:
        super().__init__()
        self._owner = owner
        self._nonce = auth.new_nonce()
        self.trusted = False
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.heartbeat: liveness.Heartbeat | None = None  # from the end of the handshake

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.send(Kind.HELLO, 0, self._nonce)

    def on_frame(self, kind: int, rid: int, payload: bytes | bytearray) -> None:
        if self.trusted:
            self.heartbeat.heard = True  # type: ignore[union-attr]  # set with trusted
            self._owner._on_frame(kind, rid, payload)  # a PONG (request id 0) matches no request there
            return
        key = self._owner._key
        if kind == Kind.CHALLENGE and len(payload) == auth.CHALLENGE_BYTES:
            server_nonce, server_proof = payload[: auth.NONCE_BYTES], payload[auth.NONCE_BYTES :]
            if auth.verify(key, auth.Role.SERVER, self._nonce, server_nonce, server_proof):
                self.send(Kind.PROOF, 0, auth.proof(key, auth.Role.CLIENT, self._nonce, server_nonce))
                self.trusted = True
                self.max_frame = self._owner.max_frame
                self.heartbeat = liveness.Heartbeat(self._owner.heartbeat_timeout_s, self._ping, self._silent,
                                                    self._owner.vouch)
                if not self.handshake.done():
                    self.handshake.set_result(None)
                return
        self._handshake_failed(self._owner._refusal(kind, payload))

    def frame_too_large(self, kind: int, rid: int, length: int) -> None:
        if self.trusted:
            self._owner._fail_one(rid, too_large("reply", length, self.max_frame))
        else:
            self._handshake_failed(self._owner._refusal(kind, b""))

    def _ping(self) -> None:
        self.send(Kind.PING, 0)

    def _silent(self, seconds: float) -> None:
        """Nothing heard for ``seconds``: fail the requests now, then drop the socket without flushing
        (a stopped peer reads nothing, so a graceful close could wait for ever)."""
        self._owner._on_silent(seconds)
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _handshake_failed(self, exc: Exception) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(exc)
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if not self.handshake.done():
            self.handshake.set_exception(self._owner._closed_in_handshake(exc))
        self._owner._on_lost(exc)


class ChannelClient:
    """A caller's connection to one replica; many concurrent requests share it.

    It connects on first use. Once the replica says GOODBYE or the connection is lost it is
    unusable for good (``on_unusable`` fires once) and the router makes a new one if needed.
    ``key`` is the replica's channel key (``auth.channel_key``); ``tls``, if given, wraps a TCP
    connection (never the Unix socket).
    """

    _ids = itertools.count(1)

    def __init__(
        self,
        address: Address,
        key: bytes,
        *,
        tls: ssl.SSLContext | None = None,
        local_node_id: str = "",
        max_frame: int = MAX_FRAME_BYTES,
        handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
        shm_arena: ShmArena | None = None,
        heartbeat_timeout_s: float | None = None,
        connect_timeout_s: float | None = None,
        vouch: liveness.Vouch | None = None,
    ) -> None:
        self.address = address
        #: Asked before a silent replica is given up: is its process alive (its loop only busy)? See ``liveness``.
        self.vouch = vouch
        #: Silence after which the replica is given up (``liveness``); None: from the environment.
        self.heartbeat_timeout_s = heartbeat_timeout_s if heartbeat_timeout_s is not None else liveness.heartbeat_timeout_s()
        self.connect_timeout_s = connect_timeout_s if connect_timeout_s is not None else liveness.connect_timeout_s()
        self._key = key
        self._tls = tls
        self.handshake_timeout_s = handshake_timeout_s
        self.max_frame = max_frame
        self._local = bool(address.uds_path) and address.node_id == local_node_id and bool(local_node_id)
        self._conn: _ClientConnection | None = None
        self._connecting: asyncio.Future[_ClientConnection] | None = None
        self._pending: dict[int, _Pending] = {}
        self.goodbye = False
        self.lost = False
        self.closed = False
        self.on_unusable: Callable[["ChannelClient"], None] | None = None
        # Large arguments go through shared memory only to a replica on this machine: one whose Unix socket is
        # here (a Ray client's node id is its server's, which may be another machine).
        same_machine = self._local and address.uds_path is not None and os.path.exists(address.uds_path)
        self._arena = shm_arena if same_machine else None
        self._shm_out: set[str] = set()  # segments sent and not yet released by the replica

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
        """Connect and authenticate both ways. Raises NotSent (nothing was sent: retry elsewhere) or,
        when the replica cannot be trusted or refuses this caller, ReplicaUnavailableError."""
        loop = asyncio.get_running_loop()
        where = f"{self.address.host}:{self.address.port}"
        conn: _ClientConnection | None = None
        try:
            if self._local and self.address.uds_path and os.path.exists(self.address.uds_path):
                opening = loop.create_unix_connection(lambda: _ClientConnection(self), self.address.uds_path)
            else:
                opening = loop.create_connection(
                    lambda: _ClientConnection(self), self.address.host, self.address.port, ssl=self._tls,
                    ssl_handshake_timeout=self.handshake_timeout_s if self._tls is not None else None,
                )
            # A host that is down or cut off may never answer the SYN: the OS would wait minutes.
            _, conn = await asyncio.wait_for(opening, self.connect_timeout_s)
            # shield: a timeout must not cancel the future the connection still resolves
            await asyncio.wait_for(asyncio.shield(conn.handshake), self.handshake_timeout_s)
        except ssl.SSLError as exc:  # before OSError, its base: a certificate problem is not transient
            self._give_up(conn)
            raise ReplicaUnavailableError(
                f"TLS with the replica at {where} failed: {exc}. Ray's TLS settings (RAY_USE_TLS, RAY_TLS_SERVER_CERT, "
                "RAY_TLS_SERVER_KEY, RAY_TLS_CA_CERT) must be the cluster's in this process too."
            ) from exc
        except (OSError, asyncio.TimeoutError) as exc:
            self._give_up(conn)
            raise NotSent(f"cannot connect to replica at {where}: {exc!r}") from exc
        except BaseException:
            self._give_up(conn)
            raise
        if self.closed:  # the router let go of this client while it was connecting
            conn.close()
            raise NotSent("the connection was closed by its owner")
        self._conn = conn
        return conn

    def _give_up(self, conn: _ClientConnection | None) -> None:
        """The connection never became usable: close it, and say so once."""
        self.lost = True
        if conn is not None:
            conn.close()
        self._notify_unusable()

    def _closed_in_handshake(self, exc: Exception | None) -> NotSent:
        """The replica closed the connection before either end was authenticated: nothing was sent."""
        where = f"{self.address.host}:{self.address.port}"
        reason = f" ({exc})" if exc is not None else ""
        return NotSent(
            f"the replica at {where} closed the connection before the handshake ended{reason}: it is stopping, "
            "or it refused this caller's TLS (RAY_USE_TLS and Ray's certificates must be the cluster's here too)"
        )

    def _refusal(self, kind: int, payload: bytes) -> Exception:
        """Why a handshake failed, from the frame that ended it."""
        where = f"{self.address.host}:{self.address.port}"
        if kind == Kind.DENIED:
            return ReplicaUnavailableError(f"replica at {where} refused the connection: {payload.decode(errors='replace')}")
        if kind == Kind.GOODBYE:
            return NotSent("the replica is stopping")
        return ReplicaUnavailableError(
            f"The process at {where} did not prove it is the replica (it does not hold the replica's channel "
            "key): another process listens there now, or this process derives the key differently (the key "
            "includes Ray's auth token when Ray uses token authentication)."
        )

    async def call(self, request: Request) -> Any:
        """Send one request and wait for its value; raises Rejected, NotSent, FrameTooLargeError, or
        the user's error. A large one is not sent: ForObjectStore says to send it through Ray instead."""
        pickled, out_of_band = self._payload(request, large_elsewhere=True)
        conn = await self._connection()
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = _Pending(fut, None)
        self._send_call(conn, rid, pickled, out_of_band)
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
        pickled, out_of_band = self._payload(request)
        conn = await self._connection()
        rid = next(self._ids)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        pending = self._pending[rid] = _Pending(None, queue)
        # The replica sends a window of the reply ahead, no more: credit goes back as the consumer takes it.
        grants = pending.grants = Grants(functools.partial(conn.send, Kind.CREDIT, rid))
        sizes = pending.sizes = collections.deque()
        if request.duplex:
            pending.window = Window()  # and the caller's own items, the other way
        self._send_call(conn, rid, pickled, out_of_band)
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
                if pending.window is not None:
                    pieces = pump_items(body.__aiter__(), send, conn.drain, pending.window, self.max_frame)
                else:
                    pieces = pump_body(body.__aiter__(), send, conn.drain)
                pump = asyncio.get_running_loop().create_task(pieces)
            while True:
                kind, value = await queue.get()
                if kind == Kind.CHUNK:
                    first = False
                    yield value
                    grants.took(sizes.popleft())  # the consumer asks for the next: it has taken this one
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
            if pending.window is not None:
                pending.window.close()
            if pump is not None and not pump.done():
                pump.cancel()  # the reply ended (or failed) before the app read the whole body
            if not finished and not conn.closed:
                conn.send(Kind.CANCEL, rid)

    @staticmethod
    def _send_piece(conn: _ClientConnection, rid: int, kind: int, piece: bytes | memoryview) -> None:
        conn.send(kind, rid, piece)

    def _payload(self, request: Request, large_elsewhere: bool = False) -> tuple[bytes, list[memoryview]]:
        """The request pickled, and the large read-only buffers that travel beside the pickle (a large HTTP
        body: see ``buffers``). One the replica would refuse is refused here, with the reason, rather than
        sent to close the connection under every other request on it. ``large_elsewhere``: a large one
        raises ForObjectStore instead (the router sends it through Ray)."""
        if large_elsewhere:
            wire = request.to_wire()
            large_payload = dumps_unless_large(wire, SHARED_MEMORY_BYTES if self._arena is not None else
                                               LARGE_PAYLOAD_BYTES)
            if large_payload is None:
                shared = self._arena.encode(wire) if self._arena is not None else None
                if shared is not None:
                    self._shm_out.add(shared.segment)
                    large_payload = dumps(shared)
                else:  # no buffer to share (large bytes), or the arena is full: the socket up to its limit
                    large_payload = dumps_unless_large(wire)
                    if large_payload is None:
                        raise ForObjectStore()
            pickled, out_of_band = large_payload, []
        else:
            pickled, out_of_band = buffers.dump(request.to_wire())
            if self._arena is not None and sum(v.nbytes for v in out_of_band) >= SHARED_MEMORY_BYTES:
                # A large HTTP body: one copy, no socket; the replica joins it anyway, so it reads it whole.
                shared = self._arena.place(pickled, out_of_band, read_whole=True)
                if shared is not None:
                    self._shm_out.add(shared.segment)
                    pickled, out_of_band = dumps(shared), []
        size = buffers.wire_size(pickled, out_of_band)
        if size > self.max_frame:
            raise too_large("request", size, self.max_frame)
        return pickled, out_of_band

    @staticmethod
    def _send_call(conn: _ClientConnection, rid: int, pickled: bytes, out_of_band: list[memoryview]) -> None:
        if out_of_band:
            conn.send_frames(buffers.frames(rid, pickled, out_of_band))
        else:
            conn.send(Kind.CALL, rid, pickled)

    def _fail_one(self, rid: int, exc: BaseException) -> None:
        pending = self._pending.pop(rid, None)
        if pending is None:
            return
        if pending.future is not None:
            if not pending.future.done():
                pending.future.set_exception(exc)
        elif pending.queue is not None:
            pending.queue.put_nowait((Kind.ERR, exc))

    def _on_frame(self, kind: int, rid: int, payload: bytes | bytearray) -> None:
        if kind == Kind.RELEASE:
            name = payload.decode("ascii", "replace")
            if name in self._shm_out and self._arena is not None:
                self._shm_out.discard(name)
                self._arena.release(name)
            return
        if kind == Kind.GOODBYE:
            self.goodbye = True
            self._fail_all(NotSent("replica said goodbye before running the request"))
            self._notify_unusable()
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
                if pending.sizes is not None:
                    pending.sizes.append(len(payload))
            elif kind == Kind.CREDIT:
                if pending.window is not None:  # else not a duplex request: nothing to give room to
                    pending.window.credit(payload)
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

    def _abandon_shared(self) -> None:
        """The connection is gone: segments the replica never released may still be read there; drop them."""
        if self._arena is not None:
            for name in self._shm_out:
                self._arena.abandon(name)
        self._shm_out.clear()

    def _on_lost(self, exc: Exception | None) -> None:
        self._abandon_shared()
        if not self.goodbye:
            self.lost = True
            self._fail_all(
                ConnectionLost(
                    f"Lost the connection to the replica at {self.address.host}:{self.address.port} "
                    "while it was handling the request (the replica died or was killed)."
                )
            )
            self._notify_unusable()

    def _on_silent(self, seconds: float) -> None:
        """The heartbeat heard nothing for ``seconds``: the replica is stopped or cut off."""
        self._abandon_shared()
        self.lost = True
        self._fail_all(
            ConnectionLost(
                f"The replica at {self.address.host}:{self.address.port} stopped answering (nothing heard for "
                f"{seconds:.1f} s, heartbeat timeout {liveness.HEARTBEAT_TIMEOUT_ENV}={self.heartbeat_timeout_s:g}): "
                "its node is frozen, overloaded or cut off, or its event loop is blocked."
            )
        )
        self._notify_unusable()

    def _notify_unusable(self) -> None:
        if self.on_unusable is not None:
            cb, self.on_unusable = self.on_unusable, None
            cb(self)

    def close(self) -> None:
        self.closed = True
        if self._conn is not None:
            self._conn.close()
        self._abandon_shared()
