"""The data plane's side of serve_nb in one process: the controller handle, the long-poll, the routers.

One ``ServeClient`` per process, on the process's background loop. Handles, the HTTP proxy and
replicas (for their own handles) use it; it finds a running controller by name and never creates
one (``serve_nb.bootstrap`` does that for ``serve.start``/``serve.run``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any, Callable

import ray

from serve_nb import ray_private
from serve_nb.common.messages import ClusterInfo
from serve_nb.common.names import CONTROLLER_NAME, NAMESPACE, replica_actor_name
from serve_nb.core import metrics as m
from serve_nb.core.snapshots import replicas_key
from serve_nb.data import metrics
from serve_nb.data.channel import shm, tls
from serve_nb.data.channel.liveness import Vouch
from serve_nb.data.controller_watch import ControllerWatch
from serve_nb.data.loop import BackgroundLoop, abandonable, get_loop
from serve_nb.data.longpoll import LongPollClient
from serve_nb.data.objects import ObjectStoreCalls
from serve_nb.data.request import Request
from serve_nb.data.router import Router, channel_connector
from serve_nb.types import DeploymentID

logger = logging.getLogger(__name__)

LOOKUP_TIMEOUT_S = 60.0
#: Queue lengths go to the controller at most this often (autoscaling averages them anyway); a
#: queue that forms from nothing is sent at once, since that is a cold start waiting for a replica.
QUEUE_REPORT_PERIOD_S = 0.25
_lock = threading.RLock()
_client: "ServeClient | None" = None


def _vouch(actor_name: str) -> Vouch:
    """How a router asks whether a silent replica's process lives (``channel.liveness``): whether the replica
    actor answers Ray on its liveness thread, which user code blocking its event loop cannot hold up. The actor
    is looked up once, on a thread (a GCS call: a slow head must not stall this process's loop), and kept for
    the next question. The call is shielded: a caller that stops waiting (Ray Client errors on a cancelled
    await) leaves it to finish unheeded."""
    actors: list[Any] = []

    async def answers() -> bool:
        if not actors:
            loop = asyncio.get_running_loop()
            actors.append(await loop.run_in_executor(None, lambda: ray.get_actor(actor_name, namespace=NAMESPACE)))
        return bool(await asyncio.shield(abandonable(actors[0].alive.remote())))

    return answers


class ServeClient:
    """One per process. All routers and the long-poll live on the process's background loop."""

    def __init__(self, controller: Any, info: ClusterInfo) -> None:
        self.controller = controller
        self.info = info
        self.bg: BackgroundLoop = get_loop()
        self.longpoll = LongPollClient(self.bg.loop, lambda: self.controller)
        self.controller_watch = ControllerWatch(self.bg.loop, self._ask_controller_ready)
        self.node_id = ray.get_runtime_context().get_node_id()
        self._routers: dict[DeploymentID, Router] = {}
        self.ray_session = ray_private.connection_id()
        self._queued_sent: dict[DeploymentID, int] = {}
        self._queued_latest: dict[DeploymentID, int] = {}
        self._flush_scheduled: set[DeploymentID] = set()
        self.caller_id = f"{os.getpid()}-{id(self):x}"
        self.closed = False
        self._tls = tls.client_context_from_env()  # None unless Ray's TLS is on; raises if it is misconfigured
        self._large_calls = ObjectStoreCalls()
        self._metrics = metrics.store()  # written on the background loop only
        self._actor_id = ray.get_runtime_context().get_actor_id() or ""  # "" in a driver, as Ray Serve's tag

    def router(self, dep: DeploymentID) -> Router:
        """The router for ``dep`` (call on the background loop)."""
        router = self._routers.get(dep)
        if router is None:
            router = Router(
                dep, channel_connector(self.node_id, self._tls, self._ray_token, shm.process_arena(),
                                       lambda replica_id, dep=dep: _vouch(replica_actor_name(dep, replica_id))),
                local_node_id=self.node_id,
                on_replica_unreachable=lambda rid, dep=dep: self._report_unreachable(dep, rid),
                on_queue_change=lambda n, dep=dep: self._queue_changed(dep, n),
                large_calls=self._large_calls,
                count_request=self._request_counter(dep),
            )
            self._routers[dep] = router
            self.longpoll.subscribe(replicas_key(dep.app, dep.name), router.update)
        return router

    @staticmethod
    def _ray_token() -> bytes | None:
        """Ray's auth token as this process has it, for replicas whose channel key mixes it in."""
        return ray_private.ray_auth_token(only_if_enabled=False)

    def _request_counter(self, dep: DeploymentID) -> Callable[[Request], None] | None:
        """Counts ``dep``'s requests routed from here in Ray Serve's ``serve_num_router_requests``."""
        store = self._metrics
        if store is None:
            return None
        keys: dict[str, m.Key] = {}  # per route: the requests come from a handful of routes

        def count(request: Request) -> None:
            key = keys.get(request.route)
            if key is None:
                tags = (dep.name, request.route, dep.app, self.caller_id, self._actor_id)
                key = keys[request.route] = (m.ROUTER_REQUESTS, tags)
            store.inc(key)

        return count

    def _queue_changed(self, dep: DeploymentID, queued: int) -> None:
        """Tell the controller how many requests wait here: at once when a queue forms (cold start
        from zero replicas), otherwise at most every ``QUEUE_REPORT_PERIOD_S``."""
        if self._metrics is not None:
            self._metrics.gauges[(m.ROUTER_QUEUED, (dep.name, dep.app, self.caller_id, self._actor_id))] = queued
        self._queued_latest[dep] = queued
        if self._queued_sent.get(dep, 0) == 0 and queued > 0:
            self._send_queued(dep)
        elif dep not in self._flush_scheduled:
            self._flush_scheduled.add(dep)
            self.bg.loop.call_later(QUEUE_REPORT_PERIOD_S, self._send_queued, dep)

    def _send_queued(self, dep: DeploymentID) -> None:
        self._flush_scheduled.discard(dep)
        queued = self._queued_latest.get(dep, 0)
        if self._queued_sent.get(dep) == queued:
            return
        self._queued_sent[dep] = queued
        try:
            self.controller.record_queued.remote(dep.app, dep.name, self.caller_id, queued)
        except Exception:
            pass

    async def _ask_controller_ready(self) -> None:
        """The controller watch's probe: a call a live, recovered controller answers at once."""
        await self.controller.ready.remote()

    def _report_unreachable(self, dep: DeploymentID, replica_id: str) -> None:
        try:
            self.controller.report_unreachable.remote(dep.app, dep.name, replica_id)
        except Exception:
            pass

    def close(self) -> None:
        self.closed = True
        self.longpoll.close()
        self.controller_watch.close()

        def _close_routers() -> None:
            for router in self._routers.values():
                router.close()
            self._routers.clear()

        self.bg.call_soon(_close_routers)


def get_client() -> ServeClient | None:
    """This process's client, if Serve runs in the Ray cluster it is connected to (found by name).

    Never starts Ray or the controller (``serve_nb.bootstrap`` does); a client left from an earlier
    Ray connection is dropped.
    """
    global _client
    client = _client
    if client is not None and not client.closed and client.ray_session == ray_private.connection_id():
        return client
    with _lock:
        if _client is not None and not _client.closed:
            if _client.ray_session == ray_private.connection_id():
                return _client
            _client.close()  # Ray was shut down (and maybe re-initialized) under us
            _client = None
        if not ray.is_initialized():
            return None
        try:
            controller = ray.get_actor(CONTROLLER_NAME, namespace=NAMESPACE)
        except ValueError:
            return None
        info = ray.get(controller.ready.remote(), timeout=LOOKUP_TIMEOUT_S)
        _client = ServeClient(controller, info)
        return _client


def install_client(controller: Any, info: ClusterInfo) -> ServeClient:
    """Set this process's client from what the controller handed over (replicas, proxies): no lookups."""
    global _client
    with _lock:
        if _client is None or _client.closed:
            _client = ServeClient(controller, info)
        return _client


def current_client() -> ServeClient | None:
    return _client if _client is not None and not _client.closed else None


def forget_client() -> None:
    """This process stops calling serve_nb (shutdown, or a new cluster): close its routers and remove the
    shared memory its calls used."""
    global _client
    with _lock:
        if _client is not None:
            _client.close()
        _client = None
    shm.close_process_arena()
