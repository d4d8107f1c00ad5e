"""Status roll-up: replica states -> deployment status -> application status.

Builders only: they read facts and return status objects. The two latches a status feeds back into
the controller (a finished scaling clears its flag; an app once RUNNING stays RUNNING through
autoscaling) are applied by the controller's reconcile step, never by whoever reads the status.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterable, Mapping, Sequence

from serve_nb.config import AutoscalingConfig
from serve_nb.types import (
    AppDetail,
    ApplicationStatus,
    ApplicationStatusInfo,
    DeploymentDetail,
    DeploymentStatus,
    DeploymentStatusInfo,
    ReplicaDetail,
    ReplicaState,
    ScalingEvent,
)


class Scaling(str, Enum):
    """Which way a scaling decision (autoscaler or manual) is moving a deployment, until it settles."""

    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class DeploymentFacts:
    """What the controller knows about one deployment, reduced to what status depends on."""

    target: int
    version: str
    replicas: Sequence[tuple[str, ReplicaState]]  # (version, state)
    failed_message: str | None = None  # set when the current version failed to deploy
    unhealthy_message: str | None = None  # set when replicas failed after having been healthy
    scaling: Scaling | None = None  # while a scaling decision is being carried out


def replica_state_counts(replicas: Iterable[tuple[str, ReplicaState]]) -> dict[str, int]:
    return dict(sorted(Counter(str(state) for _, state in replicas).items()))


def deployment_status(facts: DeploymentFacts) -> tuple[DeploymentStatus, str]:
    """The deployment's status and a one-line message."""
    if facts.failed_message is not None:
        return DeploymentStatus.DEPLOY_FAILED, facts.failed_message
    if facts.unhealthy_message is not None:
        return DeploymentStatus.UNHEALTHY, facts.unhealthy_message
    running_current = sum(
        1 for v, s in facts.replicas if v == facts.version and s == ReplicaState.RUNNING
    )
    settled = running_current == facts.target and len(facts.replicas) == facts.target
    if settled:
        return DeploymentStatus.HEALTHY, ""
    if facts.scaling == Scaling.UP:
        return DeploymentStatus.UPSCALING, f"Upscaling to {facts.target} replicas."
    if facts.scaling == Scaling.DOWN:
        return DeploymentStatus.DOWNSCALING, f"Downscaling to {facts.target} replicas."
    return DeploymentStatus.UPDATING, f"Updating: {running_current} of {facts.target} replicas running the new version."


def application_status(
    deployments: Sequence[tuple[str, DeploymentStatus, str]],
    *,
    deleting: bool,
    was_running: bool,
) -> tuple[ApplicationStatus, str]:
    """Roll deployment statuses up; autoscaling of a running app keeps it RUNNING, as in Ray Serve."""
    if deleting:
        return ApplicationStatus.DELETING, "Deleting."
    failed = [(n, m) for n, s, m in deployments if s == DeploymentStatus.DEPLOY_FAILED]
    if failed:
        name, msg = failed[0]
        return ApplicationStatus.DEPLOY_FAILED, f"Deployment '{name}' failed to deploy:\n{msg}"
    unhealthy = [(n, m) for n, s, m in deployments if s == DeploymentStatus.UNHEALTHY]
    if unhealthy:
        name, msg = unhealthy[0]
        return ApplicationStatus.UNHEALTHY, f"Deployment '{name}' is unhealthy: {msg}"
    statuses = {s for _, s, _ in deployments}
    if statuses <= {DeploymentStatus.HEALTHY}:
        return ApplicationStatus.RUNNING, ""
    if was_running and statuses <= {DeploymentStatus.HEALTHY, DeploymentStatus.UPSCALING, DeploymentStatus.DOWNSCALING}:
        return ApplicationStatus.RUNNING, ""
    return ApplicationStatus.DEPLOYING, "Deploying."


def deployment_status_info(
    name: str, facts: DeploymentFacts, pending_resources: Callable[[], str]
) -> DeploymentStatusInfo:
    """One deployment's status object. ``pending_resources`` (asked only while the deployment is on its
    way to its target, not when it failed) says why replicas wait for resources, or ""; that reason
    follows the progress message, so users see why "Updating: 0 of 1" does not move."""
    status, message = deployment_status(facts)
    waiting = False
    if status not in (DeploymentStatus.DEPLOY_FAILED, DeploymentStatus.UNHEALTHY):
        pending = pending_resources()
        if pending:
            message, waiting = (f"{message} {pending}" if message else pending), True
    return DeploymentStatusInfo(name, status, message, replica_state_counts(facts.replicas), facts.target, waiting)


def application_status_info(
    name: str,
    route_prefix: str | None,
    ingress: str,
    deployed_at: float,
    deployments: Mapping[str, DeploymentStatusInfo],
    *,
    deleting: bool,
    was_running: bool,
) -> ApplicationStatusInfo:
    """One application's status object, rolled up from its deployments'."""
    status, message = application_status(
        [(d.name, d.status, d.message) for d in deployments.values()], deleting=deleting, was_running=was_running
    )
    return ApplicationStatusInfo(name, status, message, route_prefix, ingress, dict(deployments), deployed_at)


def deployment_detail(
    info: DeploymentStatusInfo,
    replicas: Sequence[ReplicaDetail],
    autoscaling: AutoscalingConfig | None,
    last_decision: str,
    events: Sequence[ScalingEvent],
    load: float,
) -> DeploymentDetail:
    """What the app widget shows of one deployment: its status plus replicas and scaling history."""
    running = sum(1 for r in replicas if r.state == ReplicaState.RUNNING)
    return DeploymentDetail(
        info.name, str(info.status), info.message, info.target_replicas, running, tuple(replicas),
        autoscaling.to_dict() if autoscaling else None, last_decision, tuple(events), load,
    )


def app_detail(
    name: str,
    info: ApplicationStatusInfo | None,
    route_prefix: str | None,
    ingress: str,
    http_address: str | None,
    deployments: Sequence[DeploymentDetail],
    history: Sequence[tuple[float, int, float]],
    logs: Sequence[str],
) -> AppDetail:
    """What the app widget shows; ``info`` is None while the app has no status yet."""
    return AppDetail(
        name, str(info.status) if info else "", info.message if info else "", route_prefix, ingress,
        http_address, tuple(deployments), tuple(history), tuple(logs),
    )
