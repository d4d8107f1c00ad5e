"""The HTTP proxies: one per wanted node, started, watched, retried after a failure, removed with their node.

A proxy that cannot start (the port is taken, the process died) is UNHEALTHY with the reason, and
is tried again after PROXY_RETRY_S; one that dies later is forgotten, so the next reconcile starts
a new one. Actors are reached through ``ProxyHandle``, so this runs in unit tests with fakes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Coroutine

from serve_nb.common.messages import ClusterInfo
from serve_nb.common.names import parse_proxy_actor_name
from serve_nb.config import HTTPOptions
from serve_nb.control.clock import Clock
from serve_nb.control.protocols import ActorCallFailed, Cluster, ProxyHandle
from serve_nb.core.log_format import LoggingConfig
from serve_nb.types import ProxyStatus, ProxyStatusInfo

logger = logging.getLogger(__name__)

# A proxy that failed to start is tried again after this: soon enough to pick up a freed port,
# rare enough not to flood the logs of a cluster where it keeps failing.
PROXY_RETRY_S = 5.0


@dataclass(eq=False)
class ProxyRecord:
    """One node's proxy. ``status`` changes only through the phase methods."""

    node_id: str
    actor: ProxyHandle
    status: ProxyStatus = ProxyStatus.STARTING
    message: str = ""  # why it is UNHEALTHY (kept across a retry, until one succeeds)
    retry_at: float = 0.0
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def on_started(self) -> None:
        self.status, self.message = ProxyStatus.HEALTHY, ""

    def on_start_failed(self, error: str, retry_at: float) -> None:
        self.status, self.message, self.retry_at = ProxyStatus.UNHEALTHY, error, retry_at

    def retry_due(self, now: float) -> bool:
        return self.status == ProxyStatus.UNHEALTHY and now >= self.retry_at

    def end_tasks(self) -> None:
        for task in self.tasks:
            task.cancel()


class ProxyManager:
    """Every proxy of the cluster, by node id."""

    def __init__(self, cluster: Cluster, clock: Clock, wake: Callable[[], None]) -> None:
        self._cluster = cluster
        self._clock = clock
        self._wake = wake
        self._proxies: dict[str, ProxyRecord] = {}

    def reconcile(self, wanted: set[str], options: HTTPOptions, info: ClusterInfo) -> None:
        """Stop proxies on nodes no longer wanted (or gone); start missing ones and retry failed ones."""
        now = self._clock.time()
        for node_id in list(self._proxies):
            if node_id not in wanted:
                record = self._proxies.pop(node_id)
                record.end_tasks()
                record.actor.kill()
        for node_id in wanted:
            record = self._proxies.get(node_id)
            if record is None or record.retry_due(now):
                self._start(node_id, record, options, info)

    async def adopt(self, name: str) -> None:
        """After a controller restart: keep the proxy called ``name`` if it serves and its node has none yet."""
        actor = self._cluster.get_proxy(name)
        serving = False
        if actor is not None:
            try:
                serving = await actor.is_serving()
            except ActorCallFailed:
                actor = None  # not answering: neither adopted nor killed here
        node_id = parse_proxy_actor_name(name) or ""
        if not serving or node_id in self._proxies:
            if actor is not None:
                actor.kill()
            return
        record = ProxyRecord(node_id, actor, ProxyStatus.HEALTHY)
        self._proxies[node_id] = record
        self._spawn(record, self._death_watch(record))

    def statuses(self, options: HTTPOptions) -> dict[str, ProxyStatusInfo]:
        address = f"{options.host}:{options.port}"
        return {node_id: ProxyStatusInfo(node_id, address, r.status, r.message) for node_id, r in self._proxies.items()}

    async def wait_for_route(self, prefix: str, app: str, timeout_s: float) -> bool:
        """True once every healthy proxy routes ``prefix`` to ``app``."""
        healthy = [r for r in self._proxies.values() if r.status == ProxyStatus.HEALTHY]
        results = await asyncio.gather(*(r.actor.wait_for_route(prefix, app, timeout_s) for r in healthy))
        return all(results)

    async def wait_for_logging(self, config: LoggingConfig, timeout_s: float) -> bool:
        """True once every healthy proxy writes its lines as ``config`` says."""
        healthy = [r for r in self._proxies.values() if r.status == ProxyStatus.HEALTHY]
        return all(await asyncio.gather(*(r.actor.wait_for_logging(config, timeout_s) for r in healthy)))

    async def stop_all(self) -> None:
        """Stop every proxy, gracefully first."""
        # Take them out first: the awaits below let their watchers run, and those edit the dict.
        records, self._proxies = list(self._proxies.values()), {}
        for record in records:
            record.end_tasks()
            await record.actor.shutdown()
            record.actor.kill()

    def _spawn(self, record: ProxyRecord, work: Coroutine[Any, Any, None]) -> None:
        record.tasks.append(asyncio.get_running_loop().create_task(work))

    def _start(self, node_id: str, previous: ProxyRecord | None, options: HTTPOptions, info: ClusterInfo) -> None:
        actor = self._cluster.start_proxy(node_id, options, info)
        record = ProxyRecord(node_id, actor, message=previous.message if previous else "")
        self._proxies[node_id] = record
        self._spawn(record, self._run(record))

    async def _run(self, record: ProxyRecord) -> None:
        try:
            error = await record.actor.start()
        except ActorCallFailed as exc:
            error = f"The proxy process failed while starting: {exc.brief}"
        if self._proxies.get(record.node_id) is not record:
            return  # its node went meanwhile
        if error:
            record.on_start_failed(error, self._clock.time() + PROXY_RETRY_S)
            record.actor.kill()
        else:
            record.on_started()
            self._spawn(record, self._death_watch(record))
        self._wake()

    async def _death_watch(self, record: ProxyRecord) -> None:
        try:
            await record.actor.wait_for_death()
        except ActorCallFailed as exc:
            if self._proxies.get(record.node_id) is record:
                logger.warning("serve_nb: the HTTP proxy on node %s died (%s); restarting it", record.node_id, exc.brief)
                del self._proxies[record.node_id]
                self._wake()
