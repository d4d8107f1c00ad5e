"""The HTTP proxies: one per wanted node, started, health-checked, retried after a failure, removed with their node.

A proxy that cannot start (the port is taken, the process died) is UNHEALTHY with the reason, and
is tried again after a delay that grows with each failure in a row (``proxy_retry_delay``); one that
dies later is forgotten, so the next reconcile starts a new one. A serving proxy is checked every
PROXY_HEALTH_PERIOD_S with a bounded call, as replicas are: one that does not answer in time (its node
frozen, or cut off) is UNHEALTHY at once and its node counts as unresponsive (new replicas are kept
off it); it is HEALTHY again when it answers, restarted if it answers but no longer serves, and
removed when Ray declares its node dead. Actors are reached through ``ProxyHandle``, so this runs in
unit tests with fakes.
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
from serve_nb.core.cluster_nodes import (
    PROXY_RETRY_S,
    port_held_by_own_proxy_message,
    proxy_address,
    proxy_retry_delay,
    same_host_proxies,
)
from serve_nb.core.log_format import LoggingConfig
from serve_nb.core.resources import NodeInfo
from serve_nb.exceptions import port_in_use_message
from serve_nb.types import ProxyStatus, ProxyStatusInfo

__all__ = ["PROXY_RETRY_S", "ProxyManager", "ProxyRecord"]

logger = logging.getLogger(__name__)

#: How often a serving proxy is checked, and how long its answer may take: a proxy answers at once
#: (the call runs on its actor loop, not the HTTP one), so a frozen node shows within ~3 s.
PROXY_HEALTH_PERIOD_S = 1.0
PROXY_HEALTH_TIMEOUT_S = 2.0


@dataclass(eq=False)
class ProxyRecord:
    """One node's proxy. ``status`` changes only through the phase methods."""

    node_id: str
    actor: ProxyHandle
    status: ProxyStatus = ProxyStatus.STARTING
    message: str = ""  # why it is UNHEALTHY (kept across a retry, until one succeeds)
    retry_at: float = 0.0
    start_failures: int = 0  # failed starts in a row (kept across a retry): the next retry waits longer
    unresponsive: bool = False  # serving, but its last health check got no answer in time
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def on_started(self) -> None:
        self.status, self.message, self.start_failures = ProxyStatus.HEALTHY, "", 0

    def on_start_failed(self, error: str, now: float) -> None:
        self.start_failures += 1
        delay = proxy_retry_delay(self.start_failures)
        self.status, self.retry_at = ProxyStatus.UNHEALTHY, now + delay
        self.message = f"{error} (failed {self.start_failures} time(s) in a row; next try in {delay:g} s)"

    def on_health_failed(self, why: str) -> None:
        self.status, self.message, self.unresponsive = ProxyStatus.UNHEALTHY, why, True

    def on_health_ok(self) -> None:
        self.status, self.message, self.unresponsive = ProxyStatus.HEALTHY, "", False

    def retry_due(self, now: float) -> bool:
        """A failed start is retried; a serving proxy that stopped answering is not (its node may thaw)."""
        return self.status == ProxyStatus.UNHEALTHY and not self.unresponsive and now >= self.retry_at

    def end_tasks(self) -> None:
        """Cancel its watchers (not the one calling, which is ending anyway)."""
        try:
            current = asyncio.current_task()
        except RuntimeError:
            current = None
        for task in self.tasks:
            if task is not current:
                task.cancel()


class ProxyManager:
    """Every proxy of the cluster, by node id."""

    def __init__(self, cluster: Cluster, clock: Clock, wake: Callable[[], None],
                 node_lost: Callable[[], None] = lambda: None,
                 node_unresponsive: Callable[[str], None] = lambda node_id: None) -> None:
        self._cluster = cluster
        self._clock = clock
        self._wake = wake
        self._node_lost = node_lost  # a proxy died: its node may have gone (refresh the node list)
        self._node_unresponsive = node_unresponsive  # a proxy stopped answering: check that node's replicas now
        self._proxies: dict[str, ProxyRecord] = {}
        self._options = HTTPOptions()
        self._nodes: list[NodeInfo] = []

    async def follow_node_deaths(self) -> None:
        """For the controller's life: a node Ray declares dead is dropped at once (the cached node list would keep
        it for seconds, and a proxy or replica could be started there again), and its replicas are checked now."""
        await self._cluster.watch_node_deaths(self._node_died)

    def _node_died(self, node_id: str) -> None:
        logger.warning("serve_nb: node %s died; replacing what ran there", node_id)
        self._node_unresponsive(node_id)  # the cluster already dropped it from its node list
        self._wake()

    def unresponsive_nodes(self) -> set[str]:
        """Nodes whose proxy did not answer its last health check (frozen, or cut off)."""
        return {node_id for node_id, r in self._proxies.items() if r.unresponsive}

    def reconcile(self, wanted: set[str], options: HTTPOptions, info: ClusterInfo,
                  nodes: list[NodeInfo] | None = None) -> None:
        """Stop proxies on nodes no longer wanted (or gone); start missing ones and retry failed ones.
        ``nodes`` (the alive nodes) name where each proxy is reached and who else holds a shared port."""
        now = self._clock.time()
        self._options = options
        if nodes is not None:
            self._nodes = nodes
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
        self._watch(record)

    def statuses(self, options: HTTPOptions, nodes: list[NodeInfo] | None = None) -> dict[str, ProxyStatusInfo]:
        """Each proxy's status, with the address it is reached at: its node's address when it listens on
        every interface (``0.0.0.0``), else the configured host."""
        ips = {n.node_id: n.ip for n in (self._nodes if nodes is None else nodes)}
        return {
            node_id: ProxyStatusInfo(node_id, proxy_address(options.host, options.port, ips.get(node_id, "")),
                                     r.status, r.message)
            for node_id, r in self._proxies.items()
        }

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
        record = ProxyRecord(node_id, actor, message=previous.message if previous else "",
                             start_failures=previous.start_failures if previous else 0)
        self._proxies[node_id] = record
        self._spawn(record, self._run(record, options.start_timeout_s))

    async def _run(self, record: ProxyRecord, timeout_s: float) -> None:
        try:
            error = await record.actor.start(timeout_s)
        except ActorCallFailed as exc:
            error = (f"The proxy did not start within {timeout_s:g} s (its node may be frozen or overloaded)"
                     if exc.cause == "timed out" else f"The proxy process failed while starting: {exc.brief}")
        if self._proxies.get(record.node_id) is not record:
            return  # its node went meanwhile
        if error:
            record.on_start_failed(self._explain(record.node_id, error), self._clock.time())
            record.actor.kill()
        else:
            record.on_started()
            self._watch(record)
        self._wake()

    def _explain(self, node_id: str, error: str) -> str:
        """A port-in-use error is reworded when the holder is this Serve's own proxy on another node of the
        same machine: "use another port" would be wrong advice, as every proxy uses the same port."""
        options = self._options
        if port_in_use_message(options.host, options.port) not in error:
            return error
        serving = [n for n, r in self._proxies.items() if r.status == ProxyStatus.HEALTHY]
        holders = same_host_proxies(node_id, self._nodes, serving)
        return port_held_by_own_proxy_message(options.host, options.port, holders) if holders else error

    def _watch(self, record: ProxyRecord) -> None:
        self._spawn(record, self._death_watch(record))
        self._spawn(record, self._health_loop(record))

    async def _health_loop(self, record: ProxyRecord) -> None:
        """Check the proxy every PROXY_HEALTH_PERIOD_S with a bounded call (actor death alone misses a
        frozen node: its processes live, and Ray declares the node dead only much later)."""
        while self._proxies.get(record.node_id) is record:
            await self._clock.sleep(PROXY_HEALTH_PERIOD_S)
            if self._proxies.get(record.node_id) is not record:
                return
            try:
                serving = await record.actor.check_health(PROXY_HEALTH_TIMEOUT_S)
            except ActorCallFailed as exc:
                if not record.unresponsive:
                    logger.warning("serve_nb: the HTTP proxy on node %s is not answering (%s)", record.node_id, exc.cause)
                    record.on_health_failed(f"Not answering health checks ({exc.cause}): its node may be frozen or "
                                            "cut off; new replicas are kept off it until it answers again.")
                    self._node_unresponsive(record.node_id)
                    self._wake()
                continue
            if not serving:  # it answers but its server stopped: start a new one
                logger.warning("serve_nb: the HTTP proxy on node %s stopped serving; restarting it", record.node_id)
                self._forget(record)
                return
            if record.unresponsive:
                record.on_health_ok()
                self._wake()

    def _forget(self, record: ProxyRecord) -> None:
        if self._proxies.get(record.node_id) is record:
            del self._proxies[record.node_id]
            record.end_tasks()
            record.actor.kill()
            self._wake()

    async def _death_watch(self, record: ProxyRecord) -> None:
        try:
            await record.actor.wait_for_death()
        except ActorCallFailed as exc:
            if self._proxies.get(record.node_id) is record:
                logger.warning("serve_nb: the HTTP proxy on node %s died (%s); restarting it", record.node_id, exc.brief)
                del self._proxies[record.node_id]
                record.end_tasks()
                self._node_lost()
                self._wake()
