"""Status roll-up: replica states -> deployment status -> application status.

Builders only: they read facts and return status objects. The two latches a status feeds back into
the controller (a finished scaling clears its flag; an app once RUNNING stays RUNNING through
autoscaling) are applied by the controller's reconcile step, never by whoever reads the status.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Collection, Iterable, Mapping, Sequence

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
    RequestSummary,
    ScalingEvent,
)


#: A replica still in ``__init__`` after this long is named in its deployment's status (model loading
#: takes seconds; a constructor stuck on a lock or a download never returns, and users need to see which).
SLOW_INIT_AFTER_S = 5.0


def coarse_seconds(seconds: float) -> float:
    """``seconds`` rounded down to a step that grows with it (5 s, then 30 s, then a minute), so a
    status that names a duration changes a few times a minute at most, not at every reconcile pass."""
    step = 5.0 if seconds < 60 else 30.0 if seconds < 600 else 60.0
    return float(int(seconds // step) * step)


def format_duration(seconds: float) -> str:
    """``45 s``, ``2 min 30 s``, ``12 min``: how long, for people."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, rest = divmod(whole, 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


def slow_initializers(in_init: Mapping[str, float]) -> dict[str, float]:
    """Of ``{replica id: seconds in __init__}``, those past ``SLOW_INIT_AFTER_S``, durations made coarse."""
    return {rid: coarse_seconds(s) for rid, s in sorted(in_init.items()) if s >= SLOW_INIT_AFTER_S}


def slow_init_message(slow: Mapping[str, float]) -> str:
    """One sentence naming the replicas stuck in ``__init__`` (at most three) and the longest wait."""
    if not slow:
        return ""
    ids = sorted(slow, key=lambda rid: -slow[rid])
    longest = format_duration(slow[ids[0]])
    if len(ids) == 1:
        return f"Replica {ids[0]} has been in __init__ for {longest}."
    named = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
    return f"Replicas {named} are still in __init__ (the longest for {longest})."


#: When ``serve.run`` says a replica is still in ``__init__``: once it is named in the status, then at
#: these durations, then every half hour; often enough to know it is stuck, rarely enough not to flood.
INIT_REPORT_AT_S = (SLOW_INIT_AFTER_S, 30.0, 120.0, 600.0, 1800.0)


def init_report_due(longest_s: float, reported_s: float | None) -> bool:
    """True if a wait of ``longest_s`` in ``__init__`` deserves a new line, the last having been at
    ``reported_s`` (None: never)."""
    if longest_s < SLOW_INIT_AFTER_S:
        return False
    if reported_s is None:
        return True
    marks = [m for m in INIT_REPORT_AT_S if m > reported_s]
    next_mark = marks[0] if marks else reported_s + INIT_REPORT_AT_S[-1]
    return longest_s >= next_mark


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
    in_init: Mapping[str, float] = field(default_factory=dict)  # replica id -> seconds its __init__ has run
    failed_health: bool = False  # the failure is its new replicas failing their first health check
    requests: RequestSummary | None = None  # what it served over the last minute (None: nothing)


def replica_state_counts(replicas: Iterable[tuple[str, ReplicaState]]) -> dict[str, int]:
    return dict(sorted(Counter(str(state) for _, state in replicas).items()))


def deployment_status(facts: DeploymentFacts) -> tuple[DeploymentStatus, str]:
    """The deployment's status and a one-line message."""
    if facts.failed_message is not None:
        status = DeploymentStatus.UNHEALTHY if facts.failed_health else DeploymentStatus.DEPLOY_FAILED
        return status, facts.failed_message
    running_current = sum(
        1 for v, s in facts.replicas if v == facts.version and s == ReplicaState.RUNNING
    )
    if facts.unhealthy_message is not None:
        return DeploymentStatus.UNHEALTHY, replacing_message(facts.unhealthy_message, running_current, facts.target)
    settled = running_current == facts.target and len(facts.replicas) == facts.target
    if settled:
        return DeploymentStatus.HEALTHY, ""
    if facts.scaling == Scaling.UP:
        return DeploymentStatus.UPSCALING, f"Upscaling to {facts.target} replicas."
    if facts.scaling == Scaling.DOWN:
        return DeploymentStatus.DOWNSCALING, f"Downscaling to {facts.target} replicas."
    return DeploymentStatus.UPDATING, f"Updating: {running_current} of {facts.target} replicas running the new version."


def replacing_message(why: str, running: int, target: int) -> str:
    """Why replicas were lost and, while fewer than ``target`` run, that they are being replaced: a lost
    replica is replaced at the same version, which is no update (no "running the new version")."""
    if running >= target:
        return why
    return f"{why.rstrip('.')}. Replacing lost replicas: {running} of {target} running."


def application_status(
    deployments: Sequence[tuple[str, DeploymentStatus, str]],
    *,
    deleting: bool,
    was_running: bool,
    failed_to_deploy: Collection[str] = (),
) -> tuple[ApplicationStatus, str]:
    """Roll deployment statuses up; autoscaling of a running app keeps it RUNNING, as in Ray Serve.

    ``failed_to_deploy``: deployments whose current version gave up starting; the app's deploy failed even
    when such a deployment reads UNHEALTHY (its replicas failed their first health check, as Ray Serve
    reports it)."""
    if deleting:
        return ApplicationStatus.DELETING, "Deleting."
    failed = [(n, m) for n, s, m in deployments if s == DeploymentStatus.DEPLOY_FAILED or n in failed_to_deploy]
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
    slow = slow_initializers(facts.in_init)
    if status not in (DeploymentStatus.DEPLOY_FAILED, DeploymentStatus.UNHEALTHY):
        pending = pending_resources()
        if pending:
            message, waiting = (f"{message} {pending}" if message else pending), True
    if slow:
        message = " ".join(part for part in (message, slow_init_message(slow)) if part)
    return DeploymentStatusInfo(name, status, message, replica_state_counts(facts.replicas), facts.target, waiting,
                                slow, facts.requests)


def application_status_info(
    name: str,
    route_prefix: str | None,
    ingress: str,
    deployed_at: float,
    deployments: Mapping[str, DeploymentStatusInfo],
    *,
    deleting: bool,
    was_running: bool,
    failed_to_deploy: Collection[str] = (),
) -> ApplicationStatusInfo:
    """One application's status object, rolled up from its deployments'."""
    status, message = application_status(
        [(d.name, d.status, d.message) for d in deployments.values()], deleting=deleting, was_running=was_running,
        failed_to_deploy=failed_to_deploy,
    )
    return ApplicationStatusInfo(name, status, message, route_prefix, ingress, dict(deployments), deployed_at)


def deployment_detail(
    info: DeploymentStatusInfo,
    replicas: Sequence[ReplicaDetail],
    autoscaling: AutoscalingConfig | None,
    last_decision: str,
    events: Sequence[ScalingEvent],
    load: float,
    batch_sizes: Sequence[int] = (),
    version: str = "",
) -> DeploymentDetail:
    """What the app widget shows of one deployment: its status (live request figures included) plus replicas,
    scaling history and batches."""
    running = sum(1 for r in replicas if r.state == ReplicaState.RUNNING)
    return DeploymentDetail(
        info.name, str(info.status), info.message, info.target_replicas, running, tuple(replicas),
        autoscaling.to_dict() if autoscaling else None, last_decision, tuple(events), load, tuple(batch_sizes),
        info.requests, version,
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
        info.last_deployed_time_s if info else 0.0,
    )
