"""Every Ray call of the control plane is made here, one small wrapper per kind of actor.

The controller's logic (``controller``, ``deployment_state``, ``proxies``) talks to the protocols
in ``serve_nb.control.protocols``; these classes implement them with Ray, translating Ray's
exceptions into ``ActorCallFailed`` and owning the timeouts of calls that may never answer. Unit
tests put fakes in their place.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import ray

from serve_nb import ray_private
from serve_nb.common.messages import (
    ClusterInfo,
    DeploymentSpec,
    InitResult,
    ReplicaConfig,
    ReplicaInit,
    ReplicaMetadata,
)
from serve_nb.common.names import NAMESPACE, proxy_actor_name, replica_actor_name
from serve_nb.config import HTTPOptions, actor_options
from serve_nb.control.protocols import ActorCallFailed
from serve_nb.core.log_format import LoggingConfig
from serve_nb.core.resources import NodeInfo
from serve_nb.data.http.proxy import ProxyActor
from serve_nb.data.replica import LIVENESS_GROUP, ReplicaActor
from serve_nb.types import DeploymentID, ReplicaInfo

# A live actor answers a metadata or is-serving call at once; one that has not within this long
# after a controller restart is treated as gone (killed, or left alone if it is a proxy).
ADOPT_TIMEOUT_S = 5.0
# The replica bounds its own drain by graceful_shutdown_timeout_s; this much more is for __del__.
SHUTDOWN_GRACE_S = 5.0
# A proxy asked to stop answers at once; a hung one is killed after this.
PROXY_SHUTDOWN_TIMEOUT_S = 2.0
# ray.nodes() is a GCS round trip and the reconcile loop runs 4x a second: refresh at most this often,
# and at once after an actor died (``nodes_changed``): Ray marks a node dead before it reports its actors
# dead, so the fresh list never holds the node that just went.
NODES_CACHE_S = 2.0
# Lifecycle calls, health checks and reports arrive while user requests run on the replica's own loop.
ACTOR_MAX_CONCURRENCY = 1000


def brief(exc: BaseException) -> str:
    """One line naming an exception, for status messages."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _failed(exc: BaseException) -> ActorCallFailed:
    """The user's error from a call (Ray wraps it in ``.cause``), or what went wrong (timeout, death)."""
    if isinstance(exc, asyncio.TimeoutError):
        return ActorCallFailed(brief(exc), "timed out")
    cause = getattr(exc, "cause", None)
    return ActorCallFailed(brief(exc), brief(cause if isinstance(cause, BaseException) else exc))


async def _ask(ref: Any, timeout_s: float | None = None) -> Any:
    """Await one actor call (bounded by ``timeout_s`` if given); any failure is an ActorCallFailed."""
    try:
        return await (ref if timeout_s is None else asyncio.wait_for(ref, timeout_s))
    except Exception as exc:
        raise _failed(exc) from exc


def _kill(actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:
        pass  # already gone


def replica_options(dep: DeploymentID, replica_id: str, spec: DeploymentSpec) -> dict[str, Any]:
    """The Ray actor options of a new replica: the user's ``ray_actor_options`` plus serve_nb's own."""
    return {
        **actor_options(spec.config),
        "name": replica_actor_name(dep, replica_id),  # found again by name after a controller restart
        "namespace": NAMESPACE,
        "lifetime": "detached",  # outlives a crashed controller, which adopts it on restart
        "max_restarts": 0,  # the controller replaces replicas itself, at the current version
        "max_concurrency": ACTOR_MAX_CONCURRENCY,
        "scheduling_strategy": "SPREAD",
    }


def replica_init(dep: DeploymentID, replica_id: str, spec: DeploymentSpec, controller: Any, info: ClusterInfo) -> ReplicaInit:
    """What a new replica's constructor gets (nothing secret: Ray keeps it in the GCS)."""
    return ReplicaInit.for_replica(spec, app=dep.app, replica_id=replica_id, controller=controller, cluster_info=info)


class RayReplica:
    """A replica actor (``serve_nb.data.replica.ReplicaActor``)."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    async def wait_placed(self) -> bool:
        try:
            await self._actor.ping.remote()
            return True
        except Exception:
            return False

    async def initialize(self) -> InitResult:
        return await _ask(self._actor.initialize.remote())

    async def check_health(self, timeout_s: float) -> None:
        await _ask(self._actor.check_health.remote(), timeout_s)

    async def responsive(self, timeout_s: float) -> None:
        """The replica's process answers (on a thread of its own, whatever its event loop is doing)."""
        await _ask(self._actor.alive.remote(), timeout_s)

    async def reconfigure(self, config: ReplicaConfig) -> str | None:
        return await _ask(self._actor.reconfigure.remote(config))

    async def prepare_for_shutdown(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self._actor.prepare_for_shutdown.remote(timeout_s), timeout_s + SHUTDOWN_GRACE_S)
        except Exception:
            pass  # timed out or already dead: the caller kills it next

    async def wait_for_death(self) -> None:
        await _ask(self._actor.wait_for_death.remote())

    async def get_metadata(self) -> ReplicaMetadata:
        return await _ask(self._actor.get_metadata.remote(), ADOPT_TIMEOUT_S)

    async def listen_on_node_ip(self) -> ReplicaInfo:
        return await _ask(self._actor.listen_on_node_ip.remote(), ADOPT_TIMEOUT_S)

    def kill(self) -> None:
        _kill(self._actor)


class RayProxy:
    """An HTTP proxy actor (``serve_nb.data.http.proxy.ProxyActor``)."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    async def start(self, timeout_s: float) -> str | None:
        return await _ask(self._actor.start.remote(), timeout_s)

    async def is_serving(self) -> bool:
        return await _ask(self._actor.is_serving.remote(), ADOPT_TIMEOUT_S)

    async def check_health(self, timeout_s: float) -> bool:
        return await _ask(self._actor.is_serving.remote(), timeout_s)

    async def wait_for_route(self, prefix: str, app: str, timeout_s: float) -> bool:
        try:
            return (await self._actor.wait_for_route.remote(prefix, app, timeout_s)) is True
        except Exception:
            return False

    async def wait_for_logging(self, config: LoggingConfig, timeout_s: float) -> bool:
        try:
            return (await self._actor.wait_for_logging.remote(config, timeout_s)) is True
        except Exception:
            return False

    async def shutdown(self) -> None:
        try:
            await asyncio.wait_for(self._actor.shutdown.remote(), PROXY_SHUTDOWN_TIMEOUT_S)
        except Exception:
            pass  # the caller kills it next

    async def wait_for_death(self) -> None:
        await _ask(self._actor.wait_for_death.remote())

    def kill(self) -> None:
        _kill(self._actor)


class RayCluster:
    """The Ray cluster around the controller. Constructed inside the controller actor."""

    def __init__(self) -> None:
        self._controller = ray.get_runtime_context().current_actor
        # ``alive`` has a thread of its own, so it answers even while user code blocks the replica's loop.
        self._replica_cls = ray.remote(concurrency_groups={LIVENESS_GROUP: 1})(ReplicaActor)
        self._proxy_cls = ray.remote(ProxyActor)
        self._nodes: list[NodeInfo] = []
        self._nodes_checked_at = float("-inf")

    def alive_nodes(self) -> list[NodeInfo]:
        now = time.monotonic()
        if now - self._nodes_checked_at > NODES_CACHE_S:
            self._nodes_checked_at = now
            try:
                self._nodes = [NodeInfo(n["NodeID"], n.get("Resources", {}), n.get("NodeManagerAddress", ""))
                               for n in ray.nodes() if n.get("Alive")]
            except Exception:
                pass  # keep the last known nodes
        return self._nodes

    def nodes_changed(self) -> None:
        self._nodes_checked_at = float("-inf")

    async def watch_node_deaths(self, on_dead: Callable[[str], None]) -> None:
        def died(node_id: str) -> None:
            self._nodes = [n for n in self._nodes if n.node_id != node_id]  # even if ray.nodes() fails next
            self.nodes_changed()
            on_dead(node_id)

        await ray_private.watch_node_deaths(died)

    def actor_names(self) -> list[str]:
        named = ray.util.list_named_actors(all_namespaces=True)
        return [e.get("name", "") for e in named if e.get("namespace") == NAMESPACE]

    def get_replica(self, name: str) -> RayReplica | None:
        try:
            return RayReplica(ray.get_actor(name, namespace=NAMESPACE))
        except Exception:
            return None

    def get_proxy(self, name: str) -> RayProxy | None:
        try:
            return RayProxy(ray.get_actor(name, namespace=NAMESPACE))
        except Exception:
            return None

    def start_replica(
        self, dep: DeploymentID, replica_id: str, spec: DeploymentSpec, info: ClusterInfo, node_id: str | None = None
    ) -> RayReplica:
        init = replica_init(dep, replica_id, spec, self._controller, info)
        options = replica_options(dep, replica_id, spec)
        if node_id is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
        return RayReplica(self._replica_cls.options(**options).remote(init))

    def start_proxy(self, node_id: str, options: HTTPOptions, info: ClusterInfo) -> RayProxy:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actor = self._proxy_cls.options(
            name=proxy_actor_name(node_id),
            namespace=NAMESPACE,
            lifetime="detached",
            max_restarts=0,  # the controller restarts proxies itself, and tells the user why
            num_cpus=0,
            max_concurrency=ACTOR_MAX_CONCURRENCY,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote(options, node_id, self._controller, info)
        return RayProxy(actor)

    def kv_get(self, key: bytes) -> bytes | None:
        return ray_private.kv_get(key, NAMESPACE)

    def kv_put(self, key: bytes, value: bytes) -> None:
        ray_private.kv_put(key, value, NAMESPACE)

    def kv_delete(self, key: bytes) -> None:
        ray_private.kv_delete(key, NAMESPACE)
