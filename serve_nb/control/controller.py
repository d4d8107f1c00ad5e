"""The controller actor: owns desired state, reconciles replicas toward it, hosts the long-poll.

It runs as one detached, restartable, named actor in the ``serve_nb`` namespace. Every change
of desired state is checkpointed to the GCS key-value store; a restarted controller reloads it
and adopts the replicas that are still running, by name.

``ControllerCore`` is the remote API and the reconcile loop. Deployments own their replicas
(``deployment_state``), ``proxies`` owns the HTTP proxies, and every Ray call is made behind the
``Cluster`` protocol (``actors.RayCluster`` in the actor, a fake in unit tests).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from typing import Any, Callable, Sequence

from serve_nb.common.messages import ClusterInfo, DeploymentSpec
from serve_nb.common.names import parse_proxy_actor_name, parse_replica_actor_name
from serve_nb.config import AutoscalingConfig, HTTPOptions, ProxyLocation
from serve_nb.control.actors import RayCluster
from serve_nb.control.application_state import AppState
from serve_nb.control.checkpoint import Checkpoint, CheckpointStore
from serve_nb.control.clock import Clock, SystemClock
from serve_nb.control.deployment_state import DeploymentContext, DeploymentState
from serve_nb.control.longpoll import LongPollHost
from serve_nb.control.protocols import ActorCallFailed, Cluster, ReplicaHandle
from serve_nb.control.proxies import ProxyManager
from serve_nb.core.cluster_nodes import http_address, replacement_node
from serve_nb.core.policy import proxy_nodes, spans_machines
from serve_nb.core.resources import resource_request
from serve_nb.core import metrics as m
from serve_nb.core.request_stats import TallySnapshot
from serve_nb.core.log_format import LoggingConfig
from serve_nb.core.snapshots import LOGGING_KEY, ROUTES_KEY, STATUS_KEY, FeedKeyKind, app_key, parse_key, replicas_key
from serve_nb.data import metrics
from serve_nb.types import DeploymentID, ServeStatus

logger = logging.getLogger(__name__)

# How often the reconcile loop runs when nothing wakes it: health of proxies, autoscaling samples,
# the history chart. Changes (a deploy, a replica up or gone) wake it at once.
RECONCILE_PERIOD_S = 0.25
# How long shutdown() waits for replicas to drain before killing what is left.
SHUTDOWN_TIMEOUT_S = 30.0


def replica_health_gauge() -> Callable[[DeploymentID, str, bool], None]:
    """Ray Serve's ``serve_deployment_replica_healthy``, which the controller records as health checks land."""
    buffer = metrics.record()

    def health(dep: DeploymentID, replica_id: str, healthy: bool) -> None:
        if buffer is not None:
            buffer.set(m.REPLICA_HEALTHY, (dep.name, replica_id, dep.app), 1.0 if healthy else 0.0)

    return health

class ControllerCore:
    """The controller's state and logic. Its public coroutines are the remote methods, reached through
    the ServeController actor at the end of this module; everything runs on the actor's one event loop."""

    def __init__(self, cluster: Cluster, http_options: HTTPOptions | None = None, clock: Clock | None = None,
                 logging_config: LoggingConfig | None = None) -> None:
        self._cluster = cluster
        self._clock: Clock = clock or SystemClock()
        self._epoch = uuid.uuid4().hex[:12]
        self._longpoll = LongPollHost(self._epoch)
        self._checkpoints = CheckpointStore(cluster)
        self._apps: dict[str, AppState] = {}
        self._http_options = http_options or HTTPOptions()
        self._logging_config = logging_config or LoggingConfig()  # the proxies': access lines, encoding, level
        self._wake = asyncio.Event()
        self._apps_gone = asyncio.Event()  # set whenever a reconcile pass leaves no application
        self._shutting_down = False
        self._proxies = ProxyManager(cluster, self._clock, self._wake.set, cluster.nodes_changed,
                                     self._check_replicas_on)
        self._ctx = DeploymentContext(self._clock, self._launch_replica, self._wake.set, self._publish,
                                      self._cluster.alive_nodes, replica_health_gauge(), cluster.nodes_changed,
                                      self._add_logs)
        self._ready = asyncio.get_event_loop().create_task(self._start())

    # -- startup and recovery ---------------------------------------------------------------------

    async def _start(self) -> None:
        await self._recover()
        self._reconcile_proxies()
        self._publish()
        loop = asyncio.get_running_loop()  # kept: a task nobody references may be collected
        self._tasks = [loop.create_task(self._control_loop()), loop.create_task(self._proxies.follow_node_deaths())]

    async def _recover(self) -> None:
        saved = self._checkpoints.load()
        if saved is None:
            return
        self._http_options = saved.http_options
        self._logging_config = saved.logging_config
        for name, app in saved.apps.items():
            self._apps[name] = AppState.from_saved(name, app, self._ctx)
        await self._adopt_actors()

    async def _adopt_actors(self) -> None:
        """Find replicas and proxies by name after a restart; keep the healthy ones, stop strays."""
        try:
            names = self._cluster.actor_names()
        except Exception:
            return
        for name in names:
            if parse_proxy_actor_name(name) is not None:
                await self._proxies.adopt(name)
                continue
            parsed = parse_replica_actor_name(name)
            if parsed is None:
                continue
            actor = self._cluster.get_replica(name)
            if actor is not None:
                await self._adopt_replica(*parsed, actor)

    async def _adopt_replica(self, dep: DeploymentID, replica_id: str, actor: ReplicaHandle) -> None:
        """Keep a running replica of a wanted deployment. Its ReplicaInfo, channel secret included,
        comes from the replica itself over Ray (the checkpoint holds no secret)."""
        state = self._deployment(dep)
        if state is None:  # of an app or deployment no longer wanted
            actor.kill()
            return
        try:
            meta = await actor.get_metadata()
        except ActorCallFailed:
            actor.kill()
            return
        if meta.info is None:  # never finished starting: start afresh
            actor.kill()
            return
        state.adopt(replica_id, actor, meta)

    def _checkpoint(self) -> None:
        apps = {name: app.saved() for name, app in self._apps.items()}
        self._checkpoints.save(Checkpoint(self._http_options, apps, self._logging_config))

    # -- remote API -------------------------------------------------------------------------------

    def _cluster_info(self) -> ClusterInfo:
        return ClusterInfo(self._http_options, self._epoch)

    async def ready(self) -> ClusterInfo:
        await self._ready
        return self._cluster_info()

    async def listen_for_change(self, known: dict[str, tuple[str, int] | None]) -> dict[str, Any]:
        await self._ready
        return await self._longpoll.listen(known)

    async def set_logging_config(self, config: LoggingConfig, timeout_s: float = 10.0) -> bool:
        """The proxies' logging (``serve.start(logging_config=...)``, a config file's top-level one). It reaches
        them through the long-poll (so a proxy started later has it too); returns True once every healthy
        proxy writes its lines as ``config`` says."""
        await self._ready
        if config != self._logging_config:
            self._logging_config = config
            self._checkpoint()
            self._publish()
        return await self._proxies.wait_for_logging(config, timeout_s)

    async def deploy_app(self, name: str, route_prefix: str | None, ingress: str, specs: list[DeploymentSpec]) -> str | None:
        """Create or update an application in place. On conflict returns the error and changes nothing."""
        await self._ready
        if self._shutting_down:
            return "Serve is shutting down; call serve.start() or serve.run() again afterwards."
        if route_prefix is not None:
            for other in self._apps.values():
                if other.name != name and other.route_prefix == route_prefix:
                    return (
                        f"Route prefix '{route_prefix}' is already used by application '{other.name}'. "
                        f"Delete that application first (serve.delete('{other.name}')) or choose another route_prefix."
                    )
        now = self._clock.time()
        app = self._apps.get(name)
        if app is None:
            app = self._apps[name] = AppState(name, route_prefix, ingress, now)
        app.deploy(route_prefix, ingress, specs, now, self._ctx)
        self._checkpoint()
        self._reconcile_all()
        self._publish()
        return None

    async def delete_apps(self, names: list[str]) -> None:
        await self._ready
        for name in names:
            app = self._apps.get(name)
            if app is not None:
                app.delete()
        self._checkpoint()
        self._reconcile_all()
        self._publish()

    async def get_status(self) -> ServeStatus:
        await self._ready
        return self._status()

    async def shutdown(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Delete every app and wait (bounded) for their replicas to stop; then forget all state."""
        await self._ready
        self._shutting_down = True
        await self.delete_apps(list(self._apps))
        await self._drain_apps(timeout_s)
        self._kill_leftovers()
        await self._proxies.stop_all()
        self._checkpoints.delete()
        self._publish()

    async def _drain_apps(self, timeout_s: float) -> None:
        """Shutdown, phase 1: the reconcile loop drains and stops every replica (or the time is up)."""
        if self._apps:
            self._apps_gone.clear()
            await self._clock.wait(self._apps_gone, timeout_s)

    def _kill_leftovers(self) -> None:
        """Shutdown, phase 2: what did not stop in time is killed outright, and forgotten."""
        for app in self._apps.values():
            for state in app.deployments.values():
                state.kill_all()
        self._apps.clear()

    async def record_replica_metrics(
        self, app: str, deployment: str, replica_id: str, ongoing: int, log_lines: list[str],
        models: tuple[str, ...] = (), batch_sizes: list[int] | None = None, requests: TallySnapshot | None = None,
    ) -> None:
        """Pushed by replicas when their in-flight count or loaded models change (and as a heartbeat), with new
        log lines, batch sizes and the requests they finished. Changed models go to routers at once: they route
        by them; the request figures reach the status at the next publish (``RequestWindow``)."""
        state = self._deployment(DeploymentID(app, deployment))
        if state is None:
            return
        if state.record_metrics(replica_id, ongoing, models, batch_sizes or (), requests):
            self._publish()
        if log_lines:
            self._add_logs(DeploymentID(app, deployment), replica_id, log_lines)

    def _add_logs(self, dep: DeploymentID, replica_id: str, log_lines: Sequence[str]) -> None:
        """Keep a replica's log lines with its app, for the app widget's log pane (and a failed deploy's)."""
        if dep.app in self._apps:
            stamp = time.strftime("%H:%M:%S", time.localtime(self._clock.time()))
            self._apps[dep.app].add_logs(dep.name, replica_id, log_lines, stamp)

    async def record_queued(self, app: str, deployment: str, caller: str, queued: int) -> None:
        """Pushed by routers: requests waiting for a replica slot. Wakes the controller for a cold start."""
        state = self._deployment(DeploymentID(app, deployment))
        if state is not None:
            state.record_queued(caller, queued, self._clock.time())

    async def scale_deployment(self, app: str, deployment: str, num_replicas: int) -> str | None:
        """Set a fixed-size deployment's replica count (the widget's +/- buttons); returns an error."""
        await self._ready
        state = self._deployment(DeploymentID(app, deployment))
        if state is None:
            return f"Application '{app}' has no deployment '{deployment}'."
        if state.spec.config.autoscaling_config is not None:
            return f"Deployment '{deployment}' autoscales; change its autoscaling_config instead."
        if not isinstance(num_replicas, int) or num_replicas < 1:
            return f"num_replicas must be an integer >= 1, got {num_replicas!r}."
        if num_replicas != state.target:
            state.scale(num_replicas, self._clock.time(), "manual scale")
            self._checkpoint()
            self._reconcile_all()
            self._publish()
        return None

    async def set_autoscaling(self, app: str, deployment: str, autoscaling: dict | None,
                              num_replicas: int | None = None) -> str | None:
        """Switch a deployment in place between autoscaling (``autoscaling``: AutoscalingConfig fields) and a fixed
        ``num_replicas`` (the widget's Manual/Adaptive switch); returns an error. The target moves into the new
        bounds at once; the next redeploy of the app applies its own settings again."""
        await self._ready
        state = self._deployment(DeploymentID(app, deployment))
        if state is None:
            return f"Application '{app}' has no deployment '{deployment}'."
        try:
            auto = AutoscalingConfig(**autoscaling) if autoscaling is not None else None
        except (TypeError, ValueError) as exc:
            return f"Bad autoscaling settings: {exc}"
        if auto is None and (isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1):
            return f"num_replicas must be an integer >= 1 for a fixed size, got {num_replicas!r}."
        fixed = num_replicas if auto is None else None  # as DeploymentConfig has it for an autoscaler
        state.spec = dataclasses.replace(state.spec, config=dataclasses.replace(
            state.spec.config, autoscaling_config=auto, num_replicas=fixed))
        target = num_replicas if auto is None else min(max(state.target, auto.min_replicas), auto.max_replicas)
        if target != state.target:
            state.scale(target, self._clock.time(), "manual size" if auto is None else "new autoscaling bounds")
        self._checkpoint()
        self._reconcile_all()
        self._publish()
        return None

    async def wait_for_route(self, prefix: str, app: str, timeout_s: float = 10.0) -> bool:
        """True once every healthy proxy routes ``prefix`` to ``app`` (so serve.run's caller can send at once)."""
        await self._ready
        return await self._proxies.wait_for_route(prefix, app, timeout_s)

    async def report_unreachable(self, app: str, deployment: str, replica_id: str) -> None:
        """A router lost its connection to a replica: check it now rather than at the next period."""
        state = self._deployment(DeploymentID(app, deployment))
        if state is not None:
            await state.check_reachable(replica_id)

    # -- reconcile --------------------------------------------------------------------------------

    async def _control_loop(self) -> None:
        while True:
            await self._clock.wait(self._wake, RECONCILE_PERIOD_S)
            self._wake.clear()
            try:
                self._step()
            except Exception:
                logger.exception("serve_nb controller: reconcile failed")

    def _step(self) -> None:
        """One pass of the loop: decide, act, publish (publishing settles what the status shows)."""
        self._autoscale_all()
        self._reconcile_all()
        self._reconcile_proxies()
        self._open_replicas_to_other_machines()
        self._record_history()
        self._publish()

    def _settle(self, status: ServeStatus) -> None:
        """The state transitions a status implies (scalings that finished end; RUNNING is remembered)."""
        for name, info in status.applications.items():
            self._apps[name].settle(info)

    def _autoscale_all(self) -> None:
        now = self._clock.time()
        for app in self._apps.values():
            for state in app.deployments.values():
                if state.autoscale(now):
                    self._checkpoint()

    def _record_history(self) -> None:
        now = self._clock.time()
        for app in self._apps.values():
            app.record_history(now)

    def _deployment(self, dep: DeploymentID) -> DeploymentState | None:
        app = self._apps.get(dep.app)
        return app.deployments.get(dep.name) if app else None

    def _launch_replica(self, dep: DeploymentID, replica_id: str, spec: DeploymentSpec, node_id: str | None) -> ReplicaHandle:
        if node_id is None:
            node_id = self._away_from_unresponsive(dep, spec)
        return self._cluster.start_replica(dep, replica_id, spec, self._cluster_info(), node_id)

    def _check_replicas_on(self, node_id: str) -> None:
        """A node died or its proxy stopped answering: check its replicas now, with the short bound of a router's
        "unreachable" report, rather than wait for their own (slower) checks."""
        for app in self._apps.values():
            for state in app.deployments.values():
                state.check_node(node_id)

    def _unresponsive_nodes(self) -> set[str]:
        """Nodes whose proxy or replicas stopped answering health checks (frozen, or cut off)."""
        nodes = self._proxies.unresponsive_nodes()
        for app in self._apps.values():
            for state in app.deployments.values():
                nodes |= state.unresponsive_nodes()
        return nodes

    def _away_from_unresponsive(self, dep: DeploymentID, spec: DeploymentSpec) -> str | None:
        """A node for a new replica while some node does not answer (Ray would still place it there)."""
        unresponsive = self._unresponsive_nodes()
        if not unresponsive:
            return None
        state = self._deployment(dep)
        per_node = state.replicas_per_node() if state is not None else {}
        return replacement_node(self._cluster.alive_nodes(), unresponsive,
                                resource_request(spec.config.ray_actor_options), per_node)

    def _reconcile_all(self) -> None:
        for app in list(self._apps.values()):
            for dname, state in list(app.deployments.items()):
                state.reconcile()
                if state.removing and not state.replicas:
                    del app.deployments[dname]
                    self._longpoll.remove(replicas_key(app.name, dname))
            if app.deleting and not app.deployments:
                del self._apps[app.name]
                self._checkpoint()
        if not self._apps:
            self._apps_gone.set()

    def _open_replicas_to_other_machines(self) -> None:
        """Replicas bind loopback while the cluster is one machine; once it spans several, they must
        also be reachable on their node's IP (new replicas bind it from the start)."""
        try:
            if not spans_machines(self._cluster.alive_nodes()):
                return
        except Exception:
            return
        for app in self._apps.values():
            for state in app.deployments.values():
                state.open_to_other_machines()

    def _reconcile_proxies(self) -> None:
        if self._shutting_down:  # shutdown() stops them gracefully once the apps are gone
            return
        try:
            wanted = set(proxy_nodes(self._http_options.location, self._cluster.alive_nodes()))
        except Exception:
            return
        self._proxies.reconcile(wanted, self._http_options, self._cluster_info(), self._cluster.alive_nodes())

    # -- publishing -------------------------------------------------------------------------------

    def _node_resources(self) -> list[dict[str, float]]:
        return [dict(n.resources) for n in self._cluster.alive_nodes()]

    def _status(self) -> ServeStatus:
        """What ``serve.status()`` returns. Reads only: calling it changes nothing."""
        apps = {name: app.status(self._node_resources) for name, app in self._apps.items()}
        details = self._proxies.statuses(self._http_options, self._cluster.alive_nodes())
        return ServeStatus(applications=apps, proxies={node: d.status for node, d in details.items()}, proxy_details=details)

    def _publish(self) -> None:
        status = self._status()
        self._settle(status)
        routes: dict[str, tuple[str, str]] = {}
        for app in self._apps.values():
            if app.route_prefix is not None and not app.deleting:
                routes[app.route_prefix] = (app.name, app.ingress)
            for dname, state in app.deployments.items():
                self._longpoll.publish(replicas_key(app.name, dname), state.replica_set(app.name, app.deleting))
        self._longpoll.publish(ROUTES_KEY, routes)
        self._longpoll.publish(LOGGING_KEY, self._logging_config)
        self._longpoll.publish(STATUS_KEY, status)
        options = self._http_options
        address = None
        if options.location != ProxyLocation.NoServer:
            address = http_address(options.host, options.port, self._cluster.alive_nodes())
        now = self._clock.time()
        for app in self._apps.values():
            self._longpoll.publish(app_key(app.name), app.detail(status.applications.get(app.name), address, now))
        for key in self._longpoll.store.keys():
            parsed = parse_key(key)
            if parsed is not None and parsed.kind is FeedKeyKind.APP and parsed.app not in self._apps:
                self._longpoll.remove(key)


class ServeController:
    """The controller actor: only the remote methods, each handing over to a ControllerCore.

    Kept thin because when a driver first creates an actor, Ray wraps every method of its class for
    tracing and disassembles them all to spot duplicate exports: ~0.1 s of the first deploy for the
    many methods of ControllerCore, a few milliseconds for these."""

    def __init__(self, http_options: HTTPOptions | None = None, logging_config: LoggingConfig | None = None) -> None:
        self._core = ControllerCore(RayCluster(), http_options, logging_config=logging_config)

    async def ready(self) -> ClusterInfo:
        return await self._core.ready()

    async def listen_for_change(self, known: dict[str, tuple[str, int] | None]) -> dict[str, Any]:
        return await self._core.listen_for_change(known)

    async def deploy_app(self, name: str, route_prefix: str | None, ingress: str, specs: list[DeploymentSpec]) -> str | None:
        return await self._core.deploy_app(name, route_prefix, ingress, specs)

    async def delete_apps(self, names: list[str]) -> None:
        await self._core.delete_apps(names)

    async def set_logging_config(self, config: LoggingConfig, timeout_s: float = 10.0) -> bool:
        return await self._core.set_logging_config(config, timeout_s)

    async def get_status(self) -> ServeStatus:
        return await self._core.get_status()

    async def shutdown(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        await self._core.shutdown(timeout_s)

    async def record_replica_metrics(
        self, app: str, deployment: str, replica_id: str, ongoing: int, log_lines: list[str],
        models: tuple[str, ...] = (), batch_sizes: list[int] | None = None, requests: TallySnapshot | None = None,
    ) -> None:
        await self._core.record_replica_metrics(app, deployment, replica_id, ongoing, log_lines, models, batch_sizes,
                                                requests)

    async def record_queued(self, app: str, deployment: str, caller: str, queued: int) -> None:
        await self._core.record_queued(app, deployment, caller, queued)

    async def scale_deployment(self, app: str, deployment: str, num_replicas: int) -> str | None:
        return await self._core.scale_deployment(app, deployment, num_replicas)

    async def set_autoscaling(self, app: str, deployment: str, autoscaling: dict | None,
                              num_replicas: int | None = None) -> str | None:
        return await self._core.set_autoscaling(app, deployment, autoscaling, num_replicas)

    async def wait_for_route(self, prefix: str, app: str, timeout_s: float = 10.0) -> bool:
        return await self._core.wait_for_route(prefix, app, timeout_s)

    async def report_unreachable(self, app: str, deployment: str, replica_id: str) -> None:
        await self._core.report_unreachable(app, deployment, replica_id)
