"""The whole WebSocket path in one process, without Ray: a real client on a real socket, the proxy's uvicorn
(configured as in a proxy actor) and ProxyApp, a real Router and channel over TCP, and a ReplicaCore
running the user's deployment object. Tests reach into any layer to check what it holds."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from channel_peer import KEY
from serve_nb.common.messages import ReplicaConfig, ReplicaInit
from serve_nb.core.snapshots import ROUTES_KEY
from serve_nb.data.channel import Address, ChannelClient, ChannelServer
from serve_nb.data.http.proxy import ProxyApp, bind_socket
from serve_nb.data.http.server import ObservedServer, proxy_config
from serve_nb.data.replica import ReplicaCore
from serve_nb.data.router import Router
from serve_nb.http_options import HTTPOptions
from serve_nb.types import DeploymentID, ReplicaInfo, ReplicaSet

DEP = DeploymentID("app", "Ingress")
#: Bounds every wait of these tests: one that would hang fails instead.
WAIT_S = 10.0


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll ``condition`` (it depends on sockets and other tasks) until it holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.005)


class _Client:
    """The proxy's ServeClient: one route, ``/app``, to the one router."""

    def __init__(self, router: Router) -> None:
        self._router = router
        self.longpoll = self

    def subscribe(self, key: str, callback: Callable[[Any], None]) -> None:
        if key == ROUTES_KEY:  # the only other key a proxy listens to is its logging config: none here
            callback({"/app": ("app", "Ingress")})

    def router(self, dep: DeploymentID) -> Router:
        assert dep == DEP
        return self._router


@dataclass
class Stack:
    core: ReplicaCore
    channel: ChannelServer
    router: Router
    port: int

    def url(self, path: str = "/app/ws") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    @property
    def links(self) -> list[Any]:
        """The duplex requests the replica's channel holds (one per open WebSocket)."""
        return [link for conn in self.channel._connections for link in conn._links.values()]


@contextlib.asynccontextmanager
async def serving(obj: Any, *, is_class: bool = True, max_ongoing: int = 8, max_queued: int = -1,
                  **options: Any) -> AsyncIterator[Stack]:
    """Serve ``obj`` (an instance of an ``@serve.ingress`` class, or a plain one) at ``/app``."""
    init = ReplicaInit(
        app="app", deployment="Ingress", replica_id="r1", def_blob=b"", args_blob=b"", is_class=is_class,
        version="v1", config=ReplicaConfig(max_ongoing_requests=max_ongoing),
    )
    core = ReplicaCore(init)
    core.accept_requests_for(obj)
    channel = ChannelServer(core, KEY)
    address = await channel.start("127.0.0.1", use_uds=False)
    router = Router(DEP, lambda info: ChannelClient(Address(info.host, info.port), KEY), local_node_id="node")
    router.update(ReplicaSet((ReplicaInfo("r1", address.host, address.port, None, "node", 1),),
                             max_ongoing_requests=max_ongoing, max_queued_requests=max_queued))
    http_options = HTTPOptions(port=0, **options)
    server = ObservedServer(proxy_config(ProxyApp(_Client(router), http_options), http_options))
    sock = bind_socket("127.0.0.1", 0)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.wait_for(server.started_event.wait(), WAIT_S)
        yield Stack(core, channel, router, sock.getsockname()[1])
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, WAIT_S)
        router.close()
        channel.abort()
        core._pool.shutdown(wait=False)
