"""Reconcile plans: given a deployment's goal and its replicas, what to start, stop or reconfigure.

Rolling updates start replicas of the new version first and stop old ones only as new ones
become RUNNING, so the count of running replicas never drops below the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

from serve_nb.types import ReplicaState

_ACTIVE = (ReplicaState.STARTING, ReplicaState.UPDATING, ReplicaState.RUNNING)
_SERVING = (ReplicaState.UPDATING, ReplicaState.RUNNING)
# When stopping surplus replicas, give up the least useful first.
_STOP_ORDER = {ReplicaState.STARTING: 0, ReplicaState.UPDATING: 1, ReplicaState.RUNNING: 2}


@dataclass(frozen=True)
class ReplicaView:
    replica_id: str
    version: str
    config_version: str
    state: ReplicaState
    started_at: float = 0.0
    waiting_for_resources: bool = False  # STARTING, and Ray has not placed it for a while


@dataclass(frozen=True)
class Goal:
    """What one deployment should be: ``target`` replicas of ``version`` configured as ``config_version``.

    ``start_blocked`` stops new replicas of this version from starting (it failed to deploy).
    ``unplaced``: new replicas the last pass could not place (``max_replicas_per_node`` left no node with
    room); like replicas waiting for resources, each lets an old replica go to make room.
    """

    version: str
    config_version: str
    target: int
    start_blocked: bool = False
    unplaced: int = 0


@dataclass(frozen=True)
class StartReplicas:
    count: int


@dataclass(frozen=True)
class StopReplica:
    replica_id: str


@dataclass(frozen=True)
class ReconfigureReplica:
    replica_id: str


Action = Union[StartReplicas, StopReplica, ReconfigureReplica]


def _stop_rank(r: ReplicaView) -> tuple[int, float]:
    return (_STOP_ORDER[r.state], -r.started_at)  # non-running first, then newest first


def plan(goal: Goal, replicas: Sequence[ReplicaView]) -> list[Action]:
    """Actions that move ``replicas`` toward ``goal``; [] when nothing is to be done."""
    active = [r for r in replicas if r.state in _ACTIVE]
    current = [r for r in active if r.version == goal.version]
    old = [r for r in active if r.version != goal.version]
    actions: list[Action] = []

    for r in current:
        if r.state == ReplicaState.RUNNING and r.config_version != goal.config_version:
            actions.append(ReconfigureReplica(r.replica_id))

    missing = goal.target - len(current)
    if missing > 0 and not goal.start_blocked:
        actions.append(StartReplicas(missing))
    elif missing < 0:
        for r in sorted(current, key=_stop_rank)[: -missing]:
            actions.append(StopReplica(r.replica_id))

    serving_new = sum(1 for r in current if r.state in _SERVING)
    # New replicas Ray cannot place while old ones hold the resources: let one old replica go for
    # each, or the update would wait forever (surge-first needs room for the surge).
    blocked_new = sum(1 for r in current if r.state == ReplicaState.STARTING and r.waiting_for_resources)
    # Unplaced ones make room one old replica at a time, so an update never takes every old replica down at once.
    keep_old = max(0, goal.target - serving_new - blocked_new - min(goal.unplaced, 1))
    # Old replicas that are not serving yet are never worth keeping.
    old_running = [r for r in old if r.state in _SERVING]
    for r in old:
        if r.state not in _SERVING:
            actions.append(StopReplica(r.replica_id))
    surplus = len(old_running) - keep_old
    if surplus > 0:
        for r in sorted(old_running, key=lambda r: r.started_at)[:surplus]:
            actions.append(StopReplica(r.replica_id))
    return actions
