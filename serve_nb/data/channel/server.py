"""The replica's end of the channel: accepts callers and runs their requests."""

from __future__ import annotations

import asyncio
import hmac
import os
import socket
import tempfile
from typing import Any, AsyncIterator, Awaitable, Protocol

from serve_nb.common.serialization import dumps, loads, pack_exception
from serve_nb.data.channel.frames import Address, FrameProtocol, Kind
from serve_nb.data.request import Request
from serve_nb.exceptions import RequestCancelledError

#: Connections the kernel queues before accept: a burst of new routers (a proxy per node, many
#: driver processes) connecting at once must not be refused.
LISTEN_BACKLOG = 1024


class RequestHandler(Protocol):
    """What the server needs from the replica."""

    def try_acquire(self) -> bool:
        """Reserve a slot for one request; False means reject it (full or draining)."""

    def release(self) -> None:
        """Give back the slot of a finished request."""

    def handle(self, request: Request) -> Awaitable[Any] | AsyncIterator[Any]:
        """An awaitable value, or for a streaming request an async iterator of items."""


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
            request = Request.from_wire(loads(payload))
            if request.streams:
                async for item in handler.handle(request):  # type: ignore[union-attr]
                    self.send(Kind.CHUNK, rid, dumps(item))
                    await self.drain()
                self.send(Kind.END, rid)
            else:
                result = await handler.handle(request)  # type: ignore[misc]
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
        tcp = await loop.create_server(lambda: _ServerConnection(self), host=host, port=0, backlog=LISTEN_BACKLOG)
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
        self._remove_socket_file()

    def abort(self) -> None:
        """The drain took too long: drop every connection (their requests fail as lost)."""
        for srv in self._servers:
            srv.close()
        for conn in list(self._connections):
            conn.close()
        self._remove_socket_file()

    def _remove_socket_file(self) -> None:
        if self._uds_path and os.path.exists(self._uds_path):
            os.unlink(self._uds_path)
