"""Fakes for the control plane's protocols (clock, cluster, replica and proxy actors), and a harness
that runs a ControllerCore on them: the controller's logic in milliseconds, without Ray.

Time moves only when a test advances the FakeClock; ``until`` yields to the event loop until a
condition holds (bounded), so no test waits on wall-clock time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from serve_nb.common.messages import ClusterInfo, DeploymentSpec, InitResult, ReplicaConfig, ReplicaMetadata
from serve_nb.common.names import proxy_actor_name, replica_actor_name
from serve_nb.config import AutoscalingConfig, DeploymentConfig, HTTPOptions
from serve_nb.control.controller import RECONCILE_PERIOD_S, ControllerCore
from serve_nb.control.protocols import ActorCallFailed
from serve_nb.core.resources import HEAD_NODE_RESOURCE, NodeInfo
from serve_nb.core.snapshots import STATUS_KEY
from serve_nb.types import DeploymentID, ReplicaInfo

from loop_turns import until

HEAD = NodeInfo("head", {"CPU": 4.0, HEAD_NODE_RESOURCE: 1.0})
WORKER = NodeInfo("worker", {"CPU": 4.0})
_pids = itertools.count(1000)


class FakeClock:
    """Time that moves only in ``advance``; sleepers and timeouts fire when it passes their deadline."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self._timers: list[tuple[float, asyncio.Future[None]]] = []

    def time(self) -> float:
        return self.now

    def _timer(self, seconds: float) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._timers.append((self.now + seconds, fut))
        return fut

    async def sleep(self, seconds: float) -> None:
        await self._timer(seconds)

    async def wait(self, event: asyncio.Event, timeout_s: float) -> bool:
        if event.is_set():
            return True
        timer = self._timer(timeout_s)
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({timer, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            waiter.cancel()
        return event.is_set()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [(t, f) for t, f in self._timers if t <= self.now]
        self._timers = [(t, f) for t, f in self._timers if t > self.now and not f.done()]
        for _, fut in due:
            if not fut.done():
                fut.set_result(None)


class FakeReplica:
    """A replica actor. Its behaviour comes from the cluster's settings at the time it was started."""

    def __init__(self, cluster: FakeCluster, dep: DeploymentID, replica_id: str, spec: DeploymentSpec) -> None:
        self.dep, self.replica_id, self.spec = dep, replica_id, spec
        self.name = replica_actor_name(dep, replica_id)
        self.version, self.config_version = spec.version, spec.config_version
        self.constructor_error = cluster.constructor_errors.get(dep.name)
        self.started = asyncio.Event()
        if not cluster.hold_starts:
            self.started.set()
        self.healthy = True
        self.frozen = False  # its node is frozen: health checks time out
        self.drains = True  # prepare_for_shutdown returns (False: it hangs, as a stuck replica would)
        self.initialized = False
        self.user_config: Any = None
        self.reconfigured_with: list[Any] = []
        self.drained = False
        self.killed = False
        self._dead = asyncio.Event()
        # The secret a real replica makes itself when it starts.
        self.info = ReplicaInfo(replica_id, "127.0.0.1", 9000, None, cluster.replica_node, next(_pids),
                                secret=os.urandom(32))
        self.node_ip = "10.0.0.1"  # the IP of the node it runs on
        self.opened = 0  # times asked to listen on its node's IP

    # -- test controls
    def finish_start(self) -> None:
        self.started.set()

    def die(self) -> None:
        self._dead.set()

    @property
    def alive(self) -> bool:
        return not self.killed and not self._dead.is_set()

    # -- ReplicaHandle
    async def wait_placed(self) -> bool:
        return True

    async def initialize(self) -> InitResult:
        await self.started.wait()
        if self.constructor_error:
            return InitResult(ok=False, error=self.constructor_error)
        self.initialized, self.user_config = True, self.spec.config.user_config
        return InitResult(ok=True, info=self.info, methods=("__call__",))

    async def check_health(self, timeout_s: float) -> None:
        if self.frozen:
            raise ActorCallFailed("GetTimeoutError: timed out", "timed out")
        if not self.alive:
            raise ActorCallFailed("ActorDiedError: the actor died")
        if not self.healthy:
            raise ActorCallFailed("RayTaskError(ValueError): sick", "ValueError: sick")

    async def responsive(self, timeout_s: float) -> None:
        if self.frozen:
            raise ActorCallFailed("GetTimeoutError: timed out", "timed out")
        if not self.alive:
            raise ActorCallFailed("ActorDiedError: the actor died")

    async def reconfigure(self, config: ReplicaConfig) -> str | None:
        self.reconfigured_with.append(config.user_config)
        self.user_config, self.config_version = config.user_config, config.config_version
        return None

    async def prepare_for_shutdown(self, timeout_s: float) -> None:
        if not self.drains:
            await asyncio.Event().wait()
        self.drained = True

    async def wait_for_death(self) -> None:
        await self._dead.wait()
        raise ActorCallFailed("ActorDiedError: the actor died")

    async def listen_on_node_ip(self) -> ReplicaInfo:
        self.info = dataclasses.replace(self.info, host=self.node_ip, port=self.info.port + 1000)
        self.opened += 1
        return self.info

    async def get_metadata(self) -> ReplicaMetadata:
        if not self.alive:
            raise ActorCallFailed("ActorDiedError: the actor died")
        info = self.info if self.initialized else None
        return ReplicaMetadata(self.replica_id, self.version, self.config_version, info, ("__call__",), 0.0)

    def kill(self) -> None:
        self.killed = True
        self._dead.set()


class FakeProxy:
    def __init__(self, node_id: str, start_error: str | None) -> None:
        self.node_id = node_id
        self.name = proxy_actor_name(node_id)
        self.start_error = start_error
        self.serving = False
        self.stopped = False
        self.killed = False
        self.logging_configs: list[Any] = []  # what the controller waited for this proxy to apply
        self.frozen = False  # its node is frozen: health checks get no answer
        self._dead = asyncio.Event()

    def die(self) -> None:
        self._dead.set()

    async def start(self, timeout_s: float) -> str | None:
        self.serving = self.start_error is None
        return self.start_error

    async def is_serving(self) -> bool:
        return self.serving and not self.killed

    async def check_health(self, timeout_s: float) -> bool:
        """A frozen proxy's check times out (at once: the fake clock would not move during an await)."""
        if self.frozen:
            raise ActorCallFailed("GetTimeoutError: timed out", "timed out")
        return self.serving and not self.killed

    async def wait_for_route(self, prefix: str, app: str, timeout_s: float) -> bool:
        return True

    async def wait_for_logging(self, config: Any, timeout_s: float) -> bool:
        self.logging_configs.append(config)
        return True

    async def shutdown(self) -> None:
        self.stopped = True

    async def wait_for_death(self) -> None:
        await self._dead.wait()
        raise ActorCallFailed("ActorDiedError: the proxy died")

    def kill(self) -> None:
        self.killed = True
        self._dead.set()


@dataclass
class FakeCluster:
    """Nodes, named actors and a key-value store, all in memory. Settings apply to actors started later."""

    nodes: list[NodeInfo] = field(default_factory=lambda: [HEAD])
    kv: dict[bytes, bytes] = field(default_factory=dict)
    replicas: list[FakeReplica] = field(default_factory=list)  # every replica ever started, in order
    proxies: list[FakeProxy] = field(default_factory=list)
    hold_starts: bool = False  # replicas' initialize waits for finish_start()
    constructor_errors: dict[str, str] = field(default_factory=dict)  # deployment -> error
    launch_errors: dict[str, Exception] = field(default_factory=dict)  # deployment -> what creating its actor raises
    proxy_start_error: str | None = None
    replica_node: str = "head"
    node_refreshes: int = 0  # times the controller asked for a fresh node list
    node_death_listeners: list[Callable[[str], None]] = field(default_factory=list)

    def alive_nodes(self) -> list[NodeInfo]:
        return list(self.nodes)

    def nodes_changed(self) -> None:
        self.node_refreshes += 1

    async def watch_node_deaths(self, on_dead: Callable[[str], None]) -> None:
        self.node_death_listeners.append(on_dead)
        await asyncio.Event().wait()  # the controller's life

    def node_died(self, node_id: str) -> None:
        """Ray declares ``node_id`` dead: it leaves the node list and the controller hears of it. Its actors are not
        reported dead yet (Ray does that later): calls to them get no answer, as on a frozen node."""
        self.nodes = [n for n in self.nodes if n.node_id != node_id]
        for actor in [*self.replicas, *self.proxies]:
            if (actor.info.node_id if isinstance(actor, FakeReplica) else actor.node_id) == node_id:
                actor.frozen = True
        for listener in list(self.node_death_listeners):
            listener(node_id)

    def actor_names(self) -> list[str]:
        return [a.name for a in [*self.replicas, *self.proxies] if not a.killed]

    def get_replica(self, name: str) -> FakeReplica | None:
        return next((r for r in self.replicas if r.name == name and not r.killed), None)

    def get_proxy(self, name: str) -> FakeProxy | None:
        return next((p for p in self.proxies if p.name == name and not p.killed), None)

    def start_replica(
        self, dep: DeploymentID, replica_id: str, spec: DeploymentSpec, info: ClusterInfo, node_id: str | None = None
    ) -> FakeReplica:
        if dep.name in self.launch_errors:
            raise self.launch_errors[dep.name]
        replica = FakeReplica(self, dep, replica_id, spec)
        if node_id is not None:
            replica.info = dataclasses.replace(replica.info, node_id=node_id)
        self.replicas.append(replica)
        return replica

    def start_proxy(self, node_id: str, options: HTTPOptions, info: ClusterInfo) -> FakeProxy:
        proxy = FakeProxy(node_id, self.proxy_start_error)
        self.proxies.append(proxy)
        return proxy

    def kv_get(self, key: bytes) -> bytes | None:
        return self.kv.get(key)

    def kv_put(self, key: bytes, value: bytes) -> None:
        self.kv[key] = value

    def kv_delete(self, key: bytes) -> None:
        self.kv.pop(key, None)

    # -- what tests look at
    def live(self, deployment: str | None = None) -> list[FakeReplica]:
        return [r for r in self.replicas if not r.killed and (deployment is None or r.dep.name == deployment)]


def spec(name: str = "Model", version: str = "v1", num_replicas: int | None = 1, user_config: Any = None,
         autoscaling: AutoscalingConfig | None = None, **options: Any) -> DeploymentSpec:
    """A deployment as the caller would send it; ``version`` stands for its code version."""
    config = DeploymentConfig(num_replicas=None if autoscaling else num_replicas, user_config=user_config,
                              autoscaling_config=autoscaling, **options)
    return DeploymentSpec(name, b"code", b"args", config, version, True)


async def quiesce(turns: int = 200) -> None:
    """Let every ready callback run (used to check that nothing more happens)."""
    for _ in range(turns):
        await asyncio.sleep(0)


class Harness:
    """A ControllerCore on fakes. ``http`` defaults to no proxies so tests about apps see only replicas."""

    def __init__(self, cluster: FakeCluster | None = None, clock: FakeClock | None = None) -> None:
        self.cluster = cluster or FakeCluster()
        self.clock = clock or FakeClock()
        self.core: ControllerCore | None = None

    async def start(self, http: HTTPOptions | None = None) -> ControllerCore:
        self.core = ControllerCore(self.cluster, http or HTTPOptions(location="NoServer"), self.clock)
        await self.core.ready()
        return self.core

    async def running(self, **options: Any) -> tuple[ControllerCore, list[FakeReplica]]:
        """A started controller with one app "app" of one deployment "Model" (``spec(**options)``) RUNNING; the
        controller and the app's live replicas."""
        core = await self.start()
        await core.deploy_app("app", "/app", "Model", [spec(**options)])
        await self.wait_status("RUNNING")
        return core, self.cluster.live()

    async def crash(self) -> None:
        """The controller's process dies: every task on the loop but the test's own ends."""
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        await quiesce()
        self.core = None

    async def tick(self, seconds: float = RECONCILE_PERIOD_S) -> None:
        """Let ``seconds`` pass, then let everything that became ready run."""
        self.clock.advance(seconds)
        await quiesce()

    def published(self, key: str) -> Any:
        """The value the controller last published on the feed under ``key``."""
        assert self.core is not None
        return self.core._longpoll.store.get(key)

    async def status(self, app: str = "app") -> Any:
        """The app's status as ``serve.status()`` returns it now."""
        assert self.core is not None
        return (await self.core.get_status()).applications.get(app)

    async def app_status(self, app: str = "app") -> str | None:
        info = await self.status(app)
        return None if info is None else str(info.status)

    async def wait_status(self, expected: str, app: str = "app") -> None:
        """Until the published status (what the feed and serve.run see) says the app is ``expected``."""

        def reached() -> bool:
            status = self.published(STATUS_KEY)
            info = status.applications.get(app) if status else None
            return info is not None and info.status == expected

        await until(reached, f"app '{app}' to become {expected}")


def run(coro: Any) -> Any:
    """Run one test scenario on a fresh event loop."""
    return asyncio.run(coro)
