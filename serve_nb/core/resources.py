"""Does a replica fit the cluster? The resource request of a deployment's replicas, and the message
that says why replicas are not up yet when resources are the likely cause (so nothing hangs silently).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

#: Starts every "waiting for resources" message; ``DeploymentStatusInfo.waiting_for_resources`` flags it.
PENDING_RESOURCES_TAG = "Waiting for resources"

# A STARTING replica that Ray has not placed on a node after this long is likely waiting for free
# resources: long enough that an ordinary start on a busy cluster never trips it.
SLOW_START_S = 10.0

#: Resource key Ray gives the head node only.
HEAD_NODE_RESOURCE = "node:__internal_head__"


@dataclass(frozen=True)
class NodeInfo:
    """One alive node as the controller needs it: where to put proxies, what replicas can fit."""

    node_id: str
    resources: Mapping[str, float] = field(default_factory=dict)
    ip: str = ""  # the address Ray uses for the node

    @property
    def is_head(self) -> bool:
        return HEAD_NODE_RESOURCE in self.resources


@dataclass(frozen=True)
class StartingReplica:
    """A replica not RUNNING yet: since when, and whether Ray has placed it on a node."""

    started_at: float
    placed: bool


def resource_request(options: Mapping[str, Any]) -> dict[str, float]:
    """What one replica asks Ray for, from its ``ray_actor_options`` (one CPU unless told otherwise)."""
    need = {"CPU": float(options.get("num_cpus", 1) or 0), "GPU": float(options.get("num_gpus", 0) or 0)}
    if options.get("memory"):
        need["memory"] = float(options["memory"])
    need.update({k: float(v) for k, v in (options.get("resources") or {}).items()})
    return {k: v for k, v in need.items() if v > 0}


def fits(node: Mapping[str, float], need: Mapping[str, float]) -> bool:
    """True if a node with total resources ``node`` could hold one replica asking for ``need``."""
    return all(node.get(k, 0.0) >= v for k, v in need.items())


def fits_any_node(need: Mapping[str, float], nodes: Sequence[Mapping[str, float]]) -> bool:
    """True if some node's total resources cover ``need``; True when the nodes are unknown (no false alarm)."""
    if not nodes:
        return True
    return any(fits(node, need) for node in nodes)


def pending_resources_message(
    options: Mapping[str, Any], nodes: Sequence[Mapping[str, float]], starting: Sequence[StartingReplica], now: float
) -> str:
    """Why replicas are not up yet when resources are the likely cause; "" when they are not."""
    if not starting:
        return ""
    need = resource_request(options)
    if not fits_any_node(need, nodes):
        return (
            f"{PENDING_RESOURCES_TAG}: each replica asks for {need}, more than any node in the cluster has. "
            "Lower ray_actor_options (e.g. {'num_cpus': 0.5}) or add a larger node."
        )
    slow = [r for r in starting if now - r.started_at > SLOW_START_S and not r.placed]
    if not slow:
        return ""
    return (
        f"{PENDING_RESOURCES_TAG}: {len(slow)} replica(s) have been starting for over {SLOW_START_S:g} s. "
        f"Each asks for {need}; the cluster may not have that much free (other replicas hold it), or the "
        "constructor is slow. Lower ray_actor_options, num_replicas, or free resources."
    )


def node_with_room(
    nodes: Sequence[NodeInfo], replicas_on: Mapping[str, int], limit: int, need: Mapping[str, float]
) -> str | None:
    """``max_replicas_per_node``: the node a new replica goes to, or None if no node has room for one.

    Among nodes holding fewer than ``limit`` of the deployment's replicas whose resources could hold one,
    the one holding fewest (ties: the first listed): new replicas spread, as Ray's SPREAD would."""
    room = [n for n in nodes if replicas_on.get(n.node_id, 0) < limit and fits(n.resources, need)]
    if not room:
        return None
    return min(room, key=lambda n: replicas_on.get(n.node_id, 0)).node_id


def no_room_message(limit: int, nodes: int, wanted: int) -> str:
    """Why replicas cannot start under ``max_replicas_per_node`` (said in the deployment's status)."""
    return (
        f"{PENDING_RESOURCES_TAG}: max_replicas_per_node={limit} and {nodes} node(s) that can hold a replica allow "
        f"{limit * nodes} replica(s); {wanted} wanted. Add nodes, raise max_replicas_per_node or lower num_replicas."
    )
