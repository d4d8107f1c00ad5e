"""What the control plane needs from the cluster, as protocols: one per kind of actor, one for the cluster.

``serve_nb.control.actors`` implements them with Ray (every Ray call of the control plane is made
there); unit tests implement them with fakes, so the controller's logic runs without Ray. Nothing
here imports Ray.
"""

from __future__ import annotations

from typing import Callable, Protocol

from serve_nb.common.messages import ClusterInfo, DeploymentSpec, InitResult, ReplicaConfig, ReplicaMetadata
from serve_nb.config import HTTPOptions
from serve_nb.core.log_format import LoggingConfig
from serve_nb.core.resources import NodeInfo
from serve_nb.types import DeploymentID, ReplicaInfo


class ActorCallFailed(Exception):
    """A call to an actor failed: it raised, timed out, or the actor died.

    ``brief`` names the error as it reached the controller (one line); ``cause`` is the user's own
    error when Ray wrapped one, "timed out" on a timeout, else the same as ``brief``."""

    def __init__(self, brief: str, cause: str | None = None) -> None:
        super().__init__(brief)
        self.brief = brief
        self.cause = brief if cause is None else cause


class ReplicaHandle(Protocol):
    """One replica actor, as the controller drives it through its lifecycle."""

    async def wait_placed(self) -> bool:
        """True once the actor is placed on a node (answers while its constructor still runs)."""

    async def initialize(self) -> InitResult:
        """Run the user's constructor (and reconfigure with the user_config it was created with); the
        result carries the replica's own channel secret. Raises ActorCallFailed if the process fails."""

    async def check_health(self, timeout_s: float) -> None:
        """Returns if healthy; raises ActorCallFailed otherwise."""

    async def responsive(self, timeout_s: float) -> None:
        """Returns if the replica's process answers (whatever its event loop is busy with); raises
        ActorCallFailed if it does not within ``timeout_s`` (its node frozen or cut off) or is gone."""

    async def reconfigure(self, config: ReplicaConfig) -> str | None:
        """Apply a whole new ReplicaConfig in place; returns the user's error, raises ActorCallFailed if the call fails."""

    async def prepare_for_shutdown(self, timeout_s: float) -> None:
        """Drain (bounded by ``timeout_s`` plus a little); never raises: the caller kills it next anyway."""

    async def wait_for_death(self) -> None:
        """Never returns while the actor lives; raises ActorCallFailed when it dies."""

    async def listen_on_node_ip(self) -> ReplicaInfo:
        """Also listen on the node's IP (it listened on loopback while the cluster was one machine)."""

    async def get_metadata(self) -> ReplicaMetadata:
        """What a restarted controller learns from a replica it adopts (its channel secret included);
        raises ActorCallFailed."""

    def kill(self) -> None:
        """Stop the actor now; never raises (it may already be gone)."""


class ProxyHandle(Protocol):
    """One HTTP proxy actor."""

    async def start(self, timeout_s: float) -> str | None:
        """Bind and serve; returns why it could not, raises ActorCallFailed if the process fails or it has not
        answered within ``timeout_s`` (its node frozen)."""

    async def is_serving(self) -> bool:
        """Raises ActorCallFailed when the proxy does not answer."""

    async def check_health(self, timeout_s: float) -> bool:
        """Whether it still serves; raises ActorCallFailed if it has not answered within ``timeout_s``."""

    async def wait_for_route(self, prefix: str, app: str, timeout_s: float) -> bool:
        """True once the proxy routes ``prefix`` to ``app``; False on any failure."""

    async def wait_for_logging(self, config: LoggingConfig, timeout_s: float) -> bool:
        """True once the proxy writes its lines as ``config`` says; False on any failure."""

    async def shutdown(self) -> None:
        """Stop serving (bounded wait); never raises."""

    async def wait_for_death(self) -> None:
        """Never returns while the actor lives; raises ActorCallFailed when it dies."""

    def kill(self) -> None:
        """Stop the actor now; never raises."""


class Cluster(Protocol):
    """The cluster around the controller: nodes, named actors, the checkpoint store, starting actors."""

    def alive_nodes(self) -> list[NodeInfo]:
        """The alive nodes (may be a few seconds stale, unless ``nodes_changed`` was called; never raises)."""

    def nodes_changed(self) -> None:
        """An actor died, perhaps with its node: the next ``alive_nodes`` asks Ray afresh."""

    async def watch_node_deaths(self, on_dead: Callable[[str], None]) -> None:
        """Call ``on_dead(node_id)`` as soon as Ray declares a node dead (``alive_nodes`` no longer lists it
        then); runs for the controller's life, or returns if this Ray cannot say (the node list is polled)."""

    def actor_names(self) -> list[str]:
        """Names of the live actors in serve_nb's namespace; raises if the cluster cannot say."""

    def get_replica(self, name: str) -> ReplicaHandle | None:
        """The replica actor called ``name``; None if there is none."""

    def get_proxy(self, name: str) -> ProxyHandle | None:
        """The proxy actor called ``name``; None if there is none."""

    def start_replica(
        self, dep: DeploymentID, replica_id: str, spec: DeploymentSpec, info: ClusterInfo, node_id: str | None = None
    ) -> ReplicaHandle:
        """Create a replica actor (it is not initialized yet; it makes its channel secret then), on ``node_id``
        if given (``max_replicas_per_node``, or away from unresponsive nodes), else where Ray spreads it."""

    def start_proxy(self, node_id: str, options: HTTPOptions, info: ClusterInfo) -> ProxyHandle:
        """Create a proxy actor pinned to ``node_id`` (not serving yet: call ``start``)."""

    def kv_get(self, key: bytes) -> bytes | None:
        """Read ``key`` from the cluster's key-value store (it outlives the controller)."""

    def kv_put(self, key: bytes, value: bytes) -> None:
        """Write ``key``."""

    def kv_delete(self, key: bytes) -> None:
        """Delete ``key``."""
