"""One application: its route, its deployments, and what its widget shows (history chart, log lines).

Status is read here without side effects; ``settle`` is the one place where a status feeds back
into state (the controller's reconcile step calls it).
"""

from __future__ import annotations

import collections
import functools
from typing import Callable, Mapping, Sequence

from serve_nb.common.messages import DeploymentSpec
from serve_nb.control.checkpoint import SavedApp, SavedDeployment
from serve_nb.control.deployment_state import DeploymentContext, DeploymentState
from serve_nb.core.policy import HistoryPoint, history_point_due
from serve_nb.core.status import app_detail, application_status_info, deployment_detail, deployment_status_info
from serve_nb.types import (
    AppDetail,
    ApplicationStatus,
    ApplicationStatusInfo,
    DeploymentID,
    DeploymentStatusInfo,
)

# The app widget's chart: with a point at most every few seconds when idle, this is most of an hour.
HISTORY_POINTS = 600
# Replica log lines the app widget can show.
APP_LOG_LINES = 200

NodeResources = Callable[[], Sequence[Mapping[str, float]]]


class AppState:
    """One application as the controller keeps it: route, ingress, deployments by name, and the
    history and log lines its widget shows. Deleting it marks every deployment for removal; the
    controller forgets it once the last one has no replica left."""

    def __init__(self, name: str, route_prefix: str | None, ingress: str, deployed_at: float,
                 deleting: bool = False, was_running: bool = False) -> None:
        self.name = name
        self.route_prefix = route_prefix
        self.ingress = ingress
        self.deployed_at = deployed_at
        self.deleting = deleting
        self.was_running = was_running  # reached RUNNING since its last change: autoscaling keeps it RUNNING
        self.deployments: dict[str, DeploymentState] = {}
        self.history: collections.deque[HistoryPoint] = collections.deque(maxlen=HISTORY_POINTS)
        self.logs: collections.deque[str] = collections.deque(maxlen=APP_LOG_LINES)

    @classmethod
    def from_saved(cls, name: str, saved: SavedApp, ctx: DeploymentContext) -> AppState:
        app = cls(name, saved.route_prefix, saved.ingress, saved.deployed_at, saved.deleting, saved.was_running)
        for dname, d in saved.deployments.items():
            app.deployments[dname] = DeploymentState(DeploymentID(name, dname), d.spec, d.target, ctx, d.removing)
        return app

    def saved(self) -> SavedApp:
        deployments = {d: SavedDeployment(s.spec, s.target, s.removing) for d, s in self.deployments.items()}
        return SavedApp(self.route_prefix, self.ingress, self.deployed_at, self.deleting, self.was_running, deployments)

    # -- changes ----------------------------------------------------------------------------------

    def deploy(self, route_prefix: str | None, ingress: str, specs: Sequence[DeploymentSpec], now: float,
               ctx: DeploymentContext) -> None:
        """Create or update in place: new deployments start, changed ones update, missing ones go."""
        self.deleting = False  # a re-deploy of an app still being deleted takes it back
        self.route_prefix, self.ingress, self.deployed_at = route_prefix, ingress, now
        changed = False
        for spec in specs:
            state = self.deployments.get(spec.name)
            if state is None:
                dep = DeploymentID(self.name, spec.name)
                self.deployments[spec.name] = DeploymentState(dep, spec, spec.config.initial_replicas, ctx)
                changed = True
            else:
                changed |= state.update(spec)
        names = {s.name for s in specs}
        for dname, state in self.deployments.items():
            if dname not in names:
                changed |= state.remove()
        if changed:
            self.was_running = False

    def delete(self) -> None:
        self.deleting = True
        for state in self.deployments.values():
            state.remove()

    def add_logs(self, deployment: str, replica_id: str, lines: Sequence[str], stamp: str) -> None:
        self.logs.extend(f"{stamp} {deployment}/{replica_id[:6]} | {line}" for line in lines)

    def record_history(self, now: float) -> None:
        running = sum(s.running() for s in self.deployments.values())
        ongoing = sum(s.load(now) for s in self.deployments.values())
        if history_point_due(self.history[-1] if self.history else None, running, ongoing, now):
            self.history.append((round(now, 2), running, ongoing))

    def settle(self, info: ApplicationStatusInfo) -> None:
        """Apply what the latest status says: finished scalings end, and RUNNING is remembered."""
        for dname, dinfo in info.deployments.items():
            self.deployments[dname].settle(dinfo.status)
        if info.status == ApplicationStatus.RUNNING:
            self.was_running = True

    # -- reading ----------------------------------------------------------------------------------

    def status(self, nodes: NodeResources) -> ApplicationStatusInfo:
        """The app's status now. Reads only."""
        deployments: dict[str, DeploymentStatusInfo] = {}
        for dname, state in self.deployments.items():
            if state.removing and not self.deleting:
                continue  # dropped by a redeploy: no longer part of the app, though still draining
            pending = functools.partial(state.pending_resources, nodes)
            deployments[dname] = deployment_status_info(dname, state.facts(), pending)
        failed = {d for d, s in self.deployments.items() if s.failed_message is not None and d in deployments}
        return application_status_info(
            self.name, self.route_prefix, self.ingress, self.deployed_at, deployments,
            deleting=self.deleting, was_running=self.was_running, failed_to_deploy=failed,
        )

    def detail(self, info: ApplicationStatusInfo | None, http_address: str | None, now: float) -> AppDetail:
        """What the app widget shows, given the app's status ``info``."""
        details = []
        for dname, state in self.deployments.items():
            dinfo = info.deployments.get(dname) if info else None
            if dinfo is None:
                continue
            details.append(deployment_detail(
                dinfo, state.replica_details(), state.spec.config.autoscaling_config, state.last_decision,
                list(state.events), state.load(now), list(state.batch_sizes),
                state.spec.version,
            ))
        return app_detail(self.name, info, self.route_prefix, self.ingress, http_address, details,
                          list(self.history), list(self.logs))
