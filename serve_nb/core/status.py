"""Status roll-up: replica states -> deployment status -> application status."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

from serve_nb.types import ApplicationStatus, DeploymentStatus, ReplicaState


@dataclass(frozen=True)
class DeploymentFacts:
    """What the controller knows about one deployment, reduced to what status depends on."""

    target: int
    version: str
    replicas: Sequence[tuple[str, ReplicaState]]  # (version, state)
    failed_message: str | None = None  # set when the current version failed to deploy
    unhealthy_message: str | None = None  # set when replicas failed after having been healthy
    scaling: str | None = None  # "up"/"down" while an autoscaling decision is being carried out


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
    if facts.scaling == "up":
        return DeploymentStatus.UPSCALING, f"Upscaling to {facts.target} replicas."
    if facts.scaling == "down":
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
