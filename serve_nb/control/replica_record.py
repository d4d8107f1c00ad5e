"""One replica as the controller tracks it: its actor, its versions, and its phase.

A replica's state changes only through the named phases of ``ReplicaRecord`` (STARTING -> RUNNING <->
UPDATING, any -> STOPPING), each checked against ``_TRANSITIONS``, so no code path can move a replica
in a way the lifecycle does not allow. ``DeploymentState`` decides when; this module only records.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from serve_nb.common.messages import ReplicaMetadata
from serve_nb.control.protocols import ReplicaHandle
from serve_nb.core import reconcile
from serve_nb.types import ReplicaDetail, ReplicaInfo, ReplicaState

# A STARTING replica Ray has not placed by then is waiting for resources (see reconcile.plan).
UNPLACED_AFTER_S = 3.0

_SERVING = (ReplicaState.RUNNING, ReplicaState.UPDATING)
_TRANSITIONS: dict[ReplicaState, tuple[ReplicaState, ...]] = {
    ReplicaState.STARTING: (ReplicaState.RUNNING, ReplicaState.STOPPING),
    ReplicaState.RUNNING: (ReplicaState.UPDATING, ReplicaState.STOPPING),
    ReplicaState.UPDATING: (ReplicaState.RUNNING, ReplicaState.STOPPING),
    ReplicaState.STOPPING: (ReplicaState.STOPPING,),
}



@dataclass(eq=False)
class ReplicaRecord:
    """One replica as the controller tracks it. ``state`` changes only through the phase methods."""

    replica_id: str
    actor: ReplicaHandle
    version: str
    config_version: str
    started_at: float
    state: ReplicaState = ReplicaState.STARTING
    info: ReplicaInfo | None = None  # how to reach it, once initialized
    health_failures: int = 0  # in a row
    unanswered: bool = False  # its last health check timed out (its node may be frozen)
    ongoing: int = 0  # as last reported by the replica
    placed: bool = False  # Ray has put it on a node
    placed_at: float = 0.0  # when it was placed: its __init__ started then
    opening: bool = False  # asked to listen on its node's IP too (the cluster spans machines now)
    node_id: str = ""  # the node it was placed on, when the controller chose it (or learned it)
    models: tuple[str, ...] = ()  # multiplexed models it holds or is loading, as last reported
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @classmethod
    def adopted(cls, replica_id: str, actor: ReplicaHandle, meta: ReplicaMetadata) -> ReplicaRecord:
        """A replica a restarted controller found running."""
        return cls(replica_id, actor, meta.version, meta.config_version, meta.started_at, ReplicaState.RUNNING,
                   meta.info, placed=True, node_id=meta.info.node_id if meta.info else "")

    @property
    def serving(self) -> bool:
        return self.state in _SERVING

    def _move(self, to: ReplicaState) -> None:
        if to not in _TRANSITIONS[self.state]:
            raise ValueError(f"replica {self.replica_id}: no transition {self.state} -> {to}")
        self.state = to

    def on_placed(self, now: float) -> None:
        self.placed = True
        self.placed_at = now

    def in_init_for(self, now: float) -> float | None:
        """Seconds its ``__init__`` (and first health check) has been running, or None if it is not."""
        if self.state != ReplicaState.STARTING or not self.placed:
            return None
        return now - self.placed_at

    def on_initialized(self, info: ReplicaInfo | None) -> None:
        """The constructor ran and a first health check passed: it serves from now on."""
        self._move(ReplicaState.RUNNING)
        self.info = info
        if info is not None and info.node_id:
            self.node_id = info.node_id

    def begin_reconfigure(self) -> None:
        self._move(ReplicaState.UPDATING)

    def on_reconfigured(self, config_version: str) -> None:
        """Back to RUNNING at ``config_version``, whatever the outcome: not retried until the config changes."""
        self._move(ReplicaState.RUNNING)
        self.config_version = config_version

    def on_health_ok(self) -> None:
        self.health_failures = 0

    def on_health_failure(self) -> int:
        """One more failed check; the count in a row."""
        self.health_failures += 1
        return self.health_failures

    def begin_stop(self) -> None:
        """STOPPING: its lifecycle tasks end (except the caller's own, which is finishing it)."""
        self._move(ReplicaState.STOPPING)
        current = asyncio.current_task() if self.tasks else None
        for task in self.tasks:
            if task is not current:
                task.cancel()
        self.tasks = [t for t in self.tasks if t is current]

    def view(self, now: float) -> reconcile.ReplicaView:
        waiting = self.state == ReplicaState.STARTING and not self.placed and now - self.started_at > UNPLACED_AFTER_S
        return reconcile.ReplicaView(self.replica_id, self.version, self.config_version, self.state, self.started_at, waiting)

    def detail(self) -> ReplicaDetail:
        info = self.info
        return ReplicaDetail(self.replica_id, str(self.state), info.node_id if info else "", info.pid if info else 0,
                             self.started_at, self.ongoing, self.version, self.models, info.host if info else "")
