"""The replica's end of the channel: accepts callers and runs their requests.

Until a connection has proven it holds the replica's key (``auth``: HELLO, CHALLENGE, PROOF) it is
treated as hostile: each frame must be the expected handshake frame of at most ``MAX_HELLO_BYTES``
(anything else closes it before its payload is read), the handshake must end within its deadline,
and at most ``MAX_UNAUTHENTICATED`` such connections are held (the oldest is dropped for a new one:
a real caller completes its handshake at once, so it is never the oldest). With TLS the same
deadline bounds the TLS handshake, which comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import os
import pickle
import socket
import ssl
import threading
from enum import Enum
from typing import Any, AsyncIterator, Awaitable, Iterable, Protocol

from serve_nb.common.serialization import dumps, dumps_unless_large, loads, pack_exception
from serve_nb.data.channel import auth, shm, sockdir
from serve_nb.data.channel.shm import ShmCall
from serve_nb.data.channel.body import ReceivedBody
from serve_nb.data.channel.duplex import ReceivedItems, Window
from serve_nb.data.channel.buffers import Assembly
from serve_nb.data.channel.frames import MAX_FRAME_BYTES, Address, FrameProtocol, Kind, too_large
from serve_nb.data.request import Request, StashedResult
from serve_nb.exceptions import RequestCancelledError

#: Connections the kernel queues before accept: a burst of new routers (a proxy per node, many
#: driver processes) connecting at once must not be refused.
LISTEN_BACKLOG = 1024
#: The largest frame accepted before the caller is authenticated: a HELLO carries a 32-byte nonce
#: and a PROOF a 32-byte HMAC, nothing more.
MAX_HELLO_BYTES = 256
#: A caller answers at once; a connection whose handshake has not ended within this is dropped.
HANDSHAKE_TIMEOUT_S = 5.0
#: What a caller that did not prove it holds the key is told before the connection closes.
DENIED_MESSAGE = b"channel authentication failed"
#: Connections that have not yet authenticated, held at once per server; beyond it the oldest goes.
MAX_UNAUTHENTICATED = 128


def listen_host(node_ip: str, node_ips: Iterable[str]) -> str:
    """Where the replica's TCP listener binds: loopback while every node of the cluster is on this
    machine (same IP as this node: one node, or several started on one host), else the node's IP,
    the address Ray itself uses for it, so replicas on other machines can be reached."""
    loopback = "::1" if ":" in node_ip else "127.0.0.1"
    try:
        if ipaddress.ip_address(node_ip).is_loopback:
            return node_ip
    except ValueError:
        pass
    return loopback if all(ip == node_ip for ip in node_ips) else node_ip


class RequestHandler(Protocol):
    """What the server needs from the replica."""

    def try_acquire(self) -> bool:
        """Reserve a slot for one request; False means reject it (full or draining)."""

    def release(self) -> None:
        """Give back the slot of a finished request."""

    def handle(self, request: Request) -> Awaitable[Any] | AsyncIterator[Any]:
        """An awaitable value, or for a streaming request an async iterator of items."""

    def stash(self, value: Any) -> str:
        """Keep a reply too large for the channel until the caller takes it through Ray; its token."""


class Phase(Enum):
    """Where a connection is in its handshake."""

    HELLO = "waiting for the caller's nonce"
    PROOF = "waiting for the caller's proof"
    AUTHENTICATED = "authenticated"


#: A RELEASE waits at most this long for a frame to go out with.
RELEASE_DELAY_S = 0.005


class _ServerConnection(FrameProtocol):
    max_frame = MAX_HELLO_BYTES  # until authenticated; then the server's limit

    def __init__(self, server: "ChannelServer") -> None:
        super().__init__()
        self._server = server
        self._phase = Phase.HELLO
        self._client_nonce = b""
        self._server_nonce = b""
        self._deadline: asyncio.TimerHandle | None = None
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._bodies: dict[int, ReceivedBody] = {}  # requests whose body is still arriving
        self._links: dict[int, ReceivedItems] = {}  # duplex requests (WebSockets) still running
        self._windows: dict[int, Window] = {}  # streamed replies still running: what the caller has not taken
        self._assemblies: dict[int, tuple[Assembly, asyncio.Future[Assembly]]] = {}  # buffers still arriving
        self.goodbye_sent = False
        self._loop = asyncio.get_running_loop()  # RELEASE frames are sent from other threads through it
        self._loop_thread = threading.get_ident()
        self._releases: list[str] = []  # segments done with, their RELEASE not sent yet
        self._release_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        server = self._server
        server._connections.add(self)
        pending = server._unauthenticated
        if len(pending) >= server.max_unauthenticated:
            oldest = next(iter(pending))  # insertion order: the oldest handshake
            oldest._end_handshake()
            oldest.close()
        pending[self] = None
        self._deadline = asyncio.get_running_loop().call_later(server.handshake_timeout_s, self.close)

    def _end_handshake(self) -> None:
        self._server._unauthenticated.pop(self, None)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def frame_too_large(self, kind: int, rid: int, length: int) -> None:
        if self._phase is not Phase.AUTHENTICATED:
            self.send(Kind.DENIED, rid, DENIED_MESSAGE)
        elif kind == Kind.CALL or kind == Kind.CALL_BUFFERS:
            self.send(Kind.ERR, rid, pack_exception(too_large("request", length, self.max_frame)))

    def _handshake(self, kind: int, payload: bytes | bytearray) -> bool:
        """Take one handshake frame; False if it is not the one expected, or its proof is wrong."""
        key = self._server.key
        if self._phase is Phase.HELLO:
            if kind != Kind.HELLO or len(payload) != auth.NONCE_BYTES:
                return False
            self._client_nonce, self._server_nonce = payload, auth.new_nonce()
            server_proof = auth.proof(key, auth.Role.SERVER, self._client_nonce, self._server_nonce)
            self.send(Kind.CHALLENGE, 0, self._server_nonce + server_proof)
            self._phase = Phase.PROOF
            return True
        if kind != Kind.PROOF or not auth.verify(key, auth.Role.CLIENT, self._client_nonce, self._server_nonce, payload):
            return False
        self._phase = Phase.AUTHENTICATED
        self.max_frame = self._server.max_frame
        self._end_handshake()
        return True

    def on_frame(self, kind: int, rid: int, payload: bytes | bytearray) -> None:
        if self._phase is not Phase.AUTHENTICATED:
            if not self._handshake(kind, payload):
                self.send(Kind.DENIED, rid, DENIED_MESSAGE)
                self.close()
            return
        if kind == Kind.CALL:
            self._admit(rid, payload)
        elif kind == Kind.BUFFER:
            self._add_buffer(rid, payload)
        elif kind == Kind.CALL_BUFFERS:
            self._admit_assembly(rid, payload)
        elif kind == Kind.BODY:
            body = self._bodies.get(rid)
            if body is not None:  # else the request has ended: the rest of its body is not wanted
                body.feed(payload)
        elif kind == Kind.MESSAGE:
            link = self._links.get(rid)
            if link is not None and not link.feed(payload):  # else not a duplex request, or it has ended
                self._cancel(rid)  # the caller sent past its window: ending the request bounds what is held
        elif kind == Kind.CREDIT:
            window = self._windows.get(rid)
            if window is not None:  # else not streaming, or it has ended
                window.credit(payload)
        elif kind == Kind.BODY_END:
            body = self._bodies.pop(rid, None)
            if body is not None:
                body.end()
            elif rid in self._links:
                self._links[rid].end()
        elif kind == Kind.CANCEL:
            self._cancel(rid)
        elif kind == Kind.PING:  # only once authenticated: before, any frame but the handshake's is DENIED
            self.send(Kind.PONG, 0)  # empty whatever the PING carried: a caller cannot make this end echo data

    def _cancel(self, rid: int) -> None:
        task = self._tasks.get(rid)
        if task is not None:
            task.cancel()

    def _admit(self, rid: int, pickled: bytes | bytearray | asyncio.Future[Assembly]) -> bool:
        """Run the request, or REJECT it (full or draining). ``pickled``: the request, or the future of its
        assembly when its buffers are still arriving."""
        if self.goodbye_sent or not self._server.handler.try_acquire():
            self.send(Kind.REJECT, rid)
            return False
        task = asyncio.get_running_loop().create_task(self._run(rid, pickled))
        self._tasks[rid] = task
        # The slot is given back when the task ends, however it ends: a task cancelled before it ever
        # ran (its caller sent CANCEL, or the connection dropped, right after the CALL) runs no
        # ``finally`` of its own, and a slot given back there would be lost for good.
        task.add_done_callback(functools.partial(self._finished, rid))
        return True

    def _admit_assembly(self, rid: int, payload: bytes | bytearray) -> None:
        """A request whose buffers follow it: its announced size is checked now, as a CALL frame's header
        is; admitted, it runs once its last BUFFER frame is in."""
        try:
            assembly = Assembly(payload, self.max_frame)
        except ValueError as exc:  # too large (FrameTooLargeError), or malformed
            self.send(Kind.ERR, rid, pack_exception(exc))
            return
        assembled: asyncio.Future[Assembly] = asyncio.get_running_loop().create_future()
        if not self._admit(rid, assembled):
            return
        if assembly.complete:  # it announced no buffers
            assembled.set_result(assembly)
        else:
            self._assemblies[rid] = (assembly, assembled)

    def _add_buffer(self, rid: int, payload: bytes | bytearray) -> None:
        entry = self._assemblies.get(rid)
        if entry is None:  # refused or ended: its buffers are not wanted
            return
        assembly, assembled = entry
        try:
            assembly.add(payload)
        except ValueError as exc:
            del self._assemblies[rid]
            if not assembled.done():
                assembled.set_exception(exc)
            return
        if assembly.complete:
            del self._assemblies[rid]
            if not assembled.done():  # else the request was cancelled meanwhile
                assembled.set_result(assembly)

    async def _run(self, rid: int, pickled: bytes | bytearray | asyncio.Future[Assembly]) -> None:
        handler = self._server.handler
        try:
            wire = (await pickled).value() if isinstance(pickled, asyncio.Future) else loads(pickled)
            if type(wire) is ShmCall:  # large arguments, in the caller's shared memory: read them in place
                wire = shm.decode(wire, self._release_soon)
            request = Request.from_wire(wire)
            window: Window | None = None
            if request.body_follows:
                rest: ReceivedBody | ReceivedItems
                if request.duplex:
                    rest = self._links[rid] = ReceivedItems(functools.partial(self.send, Kind.CREDIT, rid))
                    window = self._windows[rid] = rest.outbound
                else:
                    rest = self._bodies[rid] = ReceivedBody()
                self.send(Kind.ACCEPT, rid)  # admitted: the caller sends the body (or its messages) now
                request = request.with_rest(rest)
            if request.streams:
                # Every streamed reply has a window, so a caller that stops taking (an HTTP client that does
                # not read its response) holds the producer to one window instead of queueing without bound.
                plain = window is not None  # a duplex request's items are plain values: pickle
                if window is None:
                    window = self._windows[rid] = Window()
                # aclosing: a cancelled stream runs the producer's cleanup now, not whenever it is collected.
                async with contextlib.aclosing(handler.handle(request)) as items:  # type: ignore[type-var]
                    async for item in items:
                        if not window.has_room:
                            await window.room()
                        payload = self._checked(pickle.dumps(item, protocol=5) if plain else dumps(item),
                                                "streamed item")
                        window.spend(len(payload))
                        self.send(Kind.CHUNK, rid, payload)
                        await self.drain()
                self.send(Kind.END, rid)
            else:
                result = await handler.handle(request)  # type: ignore[misc]
                payload = dumps_unless_large(result)
                if payload is None:  # the caller takes it through Ray's object store, faster than this socket
                    payload = dumps(StashedResult(handler.stash(result)))
                self.send(Kind.OK, rid, self._checked(payload, "reply"))
        except asyncio.CancelledError:
            self.send(Kind.ERR, rid, pack_exception(RequestCancelledError("The request was cancelled.")))
        except BaseException as exc:  # noqa: BLE001 - every user error goes back to the caller
            self.send(Kind.ERR, rid, pack_exception(exc))

    def _release_soon(self, segment: str) -> None:
        """Nothing reads ``segment`` any more (called from whichever thread dropped the last reference)."""
        if threading.get_ident() == self._loop_thread:
            self._queue_release(segment)
            return
        try:
            self._loop.call_soon_threadsafe(self._queue_release, segment)
        except RuntimeError:
            pass  # the loop is closed: the replica is stopping, and the caller abandons the segment

    def _queue_release(self, segment: str) -> None:
        """The RELEASE goes out with the next frame sent (usually the reply of the request that read the
        segment: one write, and the caller reads both at once), when a request ends, or at the latest
        after ``RELEASE_DELAY_S``."""
        if self.closed or self._loop.is_closed():
            return  # the caller abandons the segment with the connection
        self._releases.append(segment)
        if self._release_timer is None:
            self._release_timer = self._loop.call_later(RELEASE_DELAY_S, self._flush_releases)

    def _release_frames(self) -> list[tuple[int, int, tuple[bytes]]]:
        releases, self._releases = self._releases, []
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None
        return [(Kind.RELEASE, 0, (name.encode("ascii"),)) for name in releases]

    def _flush_releases(self) -> None:
        if self._releases:
            self.send_frames(self._release_frames())  # nothing is sent once the connection is closed
        elif self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None

    def send(self, kind: int, rid: int, payload: bytes | memoryview = b"") -> None:
        if self._releases:
            self.send_frames([*self._release_frames(), (kind, rid, (payload,))])
        else:
            super().send(kind, rid, payload)

    def _finished(self, rid: int, _task: "asyncio.Task[None]") -> None:
        self._flush_releases()
        self._tasks.pop(rid, None)
        self._bodies.pop(rid, None)
        link = self._links.pop(rid, None)
        if link is not None:
            link.close()
        window = self._windows.pop(rid, None)
        if window is not None:
            window.close()
        self._assemblies.pop(rid, None)
        self._server.handler.release()
        self._server._on_request_done()

    def _checked(self, payload: bytes, what: str) -> bytes:
        """A reply the caller would refuse becomes the caller's error instead of a dropped connection."""
        if len(payload) > self.max_frame:
            raise too_large(what, len(payload), self.max_frame)
        return payload

    def say_goodbye(self) -> None:
        if not self.goodbye_sent:
            self.goodbye_sent = True
            self.send(Kind.GOODBYE, 0)

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._end_handshake()
        self._server._connections.discard(self)
        self._release_frames()  # the caller abandons what it did not hear of
        for task in list(self._tasks.values()):
            task.cancel()  # the caller is gone: stop its work


class ChannelServer:
    """Accepts callers on TCP (and a Unix socket for same-node callers) and runs their requests.

    ``key`` is what callers must prove they hold (``auth.channel_key``); ``tls``, if given, wraps
    every TCP connection (never the Unix socket)."""

    def __init__(
        self,
        handler: RequestHandler,
        key: bytes,
        *,
        tls: ssl.SSLContext | None = None,
        max_frame: int = MAX_FRAME_BYTES,
        handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
        max_unauthenticated: int = MAX_UNAUTHENTICATED,
    ) -> None:
        self.handler = handler
        self.key = key
        self.tls = tls
        self.max_frame = max_frame
        self.handshake_timeout_s = handshake_timeout_s
        self.max_unauthenticated = max_unauthenticated
        self._connections: set[_ServerConnection] = set()
        self._unauthenticated: dict[_ServerConnection, None] = {}  # insertion-ordered: oldest first
        self._servers: list[asyncio.AbstractServer] = []
        self._idle = asyncio.Event()
        self._uds_dir: str | None = None

    async def start(
        self, host: str, node_id: str = "", use_uds: bool = True, socket_base: str | None = None
    ) -> Address:
        """Listen on ``host`` (see ``listen_host``) and, for callers on this node, on a Unix socket in
        a private directory under ``socket_base`` (Ray's session directory; the temp dir if None)."""
        loop = asyncio.get_running_loop()
        port = await self.listen_tcp(host)
        uds = None
        if use_uds and hasattr(socket, "AF_UNIX"):
            try:
                self._uds_dir, path = sockdir.make_socket_path(socket_base)
                self._servers.append(await loop.create_unix_server(lambda: _ServerConnection(self), path=path))
                os.chmod(path, sockdir.SOCKET_MODE)
                uds = path
            except OSError:
                self._remove_socket_file()
                uds = None
        return Address(host=host, port=port, uds_path=uds, node_id=node_id)

    async def listen_tcp(self, host: str) -> int:
        """Accept callers on ``host`` too (TLS when Ray's is on); returns the port. Listeners add up: a
        replica that listened on loopback keeps it when it later also listens on the node's IP."""
        tls_options: dict[str, Any] = {}
        if self.tls is not None:
            tls_options = {"ssl": self.tls, "ssl_handshake_timeout": self.handshake_timeout_s}
        tcp = await asyncio.get_running_loop().create_server(
            lambda: _ServerConnection(self), host=host, port=0, backlog=LISTEN_BACKLOG, **tls_options
        )
        self._servers.append(tcp)
        return tcp.sockets[0].getsockname()[1]

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
        self._remove_socket_file()

    def abort(self) -> None:
        """The drain took too long: drop every connection (their requests fail as lost)."""
        for srv in self._servers:
            srv.close()
        for conn in list(self._connections):
            conn.close()
        self._remove_socket_file()

    def _remove_socket_file(self) -> None:
        if self._uds_dir is not None:
            sockdir.remove_dir(self._uds_dir)
            self._uds_dir = None
