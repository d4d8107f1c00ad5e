"""The controller actor: owns desired state, reconciles replicas toward it, hosts the long-poll.

It runs as one detached, restartable, named actor in the ``serve_nb`` namespace. Every change
of desired state is checkpointed to the GCS key-value store; a restarted controller reloads it
and adopts the replicas that are still running, by name.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import statistics
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import ray

from serve_nb import ray_private
from serve_nb.common.names import (
    NAMESPACE,
    PROXY_PREFIX,
    REPLICA_PREFIX,
    parse_proxy_actor_name,
    parse_replica_actor_name,
    proxy_actor_name,
    replica_actor_name,
)
from serve_nb.config import HTTPOptions
from serve_nb.core import reconcile
from serve_nb.core.autoscaling import ScalingState, decide
from serve_nb.core.snapshots import ROUTES_KEY, STATUS_KEY, app_key, replicas_key
from serve_nb.core.status import DeploymentFacts, application_status, deployment_status, replica_state_counts
from serve_nb.control.longpoll import LongPollHost
from serve_nb.common.messages import ClusterInfo, DeploymentSpec, InitResult, ReplicaInit
from serve_nb.data.http.proxy import ProxyActor
from serve_nb.data.replica import ReplicaActor
from serve_nb.common.serialization import dumps, loads
from serve_nb.types import (
    AppDetail,
    ApplicationStatus,
    ApplicationStatusInfo,
    DeploymentID,
    DeploymentStatus,
    DeploymentDetail,
    DeploymentStatusInfo,
    ProxyStatusInfo,
    ReplicaDetail,
    ReplicaInfo,
    ReplicaSet,
    ReplicaState,
    ScalingEvent,
    ServeStatus,
)

logger = logging.getLogger(__name__)

PROXY_RETRY_S = 5.0
CHECKPOINT_KEY = b"serve_nb:checkpoint"
MAX_CONSTRUCTOR_ATTEMPTS = 3
HEALTH_FAILURES_BEFORE_REPLACE = 3
UNPLACED_AFTER_S = 3.0  # a STARTING replica Ray has not placed by then is waiting for resources
RECONCILE_PERIOD_S = 0.25
QUEUED_REPORT_TTL_S = 10.0
HISTORY_POINTS = 600
APP_LOG_LINES = 200


@dataclass
class ReplicaRecord:
    replica_id: str
    actor: Any
    version: str
    config_version: str
    state: ReplicaState
    started_at: float
    info: ReplicaInfo | None = None
    health_failures: int = 0
    ongoing: int = 0
    scheduled: bool = False
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def view(self, now: float) -> reconcile.ReplicaView:
        waiting = self.state == ReplicaState.STARTING and not self.scheduled and now - self.started_at > UNPLACED_AFTER_S
        return reconcile.ReplicaView(self.replica_id, self.version, self.config_version, self.state, self.started_at, waiting)


@dataclass
class DeploymentState:
    dep: DeploymentID
    spec: DeploymentSpec
    target: int
    replicas: dict[str, ReplicaRecord] = field(default_factory=dict)
    methods: tuple[str, ...] = ()
    ctor_failures: int = 0
    failed_message: str | None = None
    unhealthy_message: str | None = None
    scaling: str | None = None
    removing: bool = False  # dropped from its app by a redeploy, or its app is being deleted
    queued: dict[str, tuple[int, float]] = field(default_factory=dict)  # caller id -> (queued, when)
    samples: collections.deque = field(default_factory=collections.deque)  # (time, load)
    scaling_state: ScalingState = field(default_factory=ScalingState)
    last_decision: str = ""
    events: collections.deque = field(default_factory=lambda: collections.deque(maxlen=50))

    def load(self, now: float) -> float:
        """Ongoing requests on serving replicas plus requests queued in callers (fresh reports only)."""
        executing = sum(r.ongoing for r in self.replicas.values() if r.state in (ReplicaState.RUNNING, ReplicaState.UPDATING))
        waiting = sum(q for q, t in self.queued.values() if now - t < QUEUED_REPORT_TTL_S)
        return float(executing + waiting)

    def goal(self) -> reconcile.Goal:
        target = 0 if self.removing else self.target
        return reconcile.Goal(self.spec.version, self.spec.config_version, target, self.failed_message is not None)


@dataclass
class ProxyRecord:
    node_id: str
    actor: Any
    status: str = "STARTING"
    message: str = ""
    retry_at: float = 0.0
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


@dataclass
class AppState:
    name: str
    route_prefix: str | None
    ingress: str
    deployments: dict[str, DeploymentState]
    deployed_at: float
    deleting: bool = False
    was_running: bool = False
    history: collections.deque = field(default_factory=lambda: collections.deque(maxlen=HISTORY_POINTS))
    logs: collections.deque = field(default_factory=lambda: collections.deque(maxlen=APP_LOG_LINES))


class ControllerCore:
    """The controller's state and logic. Its public coroutines are the remote methods, reached through
    the ServeController actor at the end of this module; everything runs on the actor's one event loop."""

    def __init__(self, http_options: HTTPOptions | None = None) -> None:
        self._epoch = uuid.uuid4().hex[:12]
        self._longpoll = LongPollHost(self._epoch)
        self._apps: dict[str, AppState] = {}
        self._token = secrets.token_bytes(16)
        self._http_options = http_options or HTTPOptions()
        self._wake = asyncio.Event()
        self._shutting_down = False
        self._replica_cls = ray.remote(ReplicaActor)
        self._proxy_cls = ray.remote(ProxyActor)
        self._proxies: dict[str, ProxyRecord] = {}
        self._handle: Any = None
        self._nodes_cache: list[dict[str, Any]] = []
        self._nodes_checked_at = 0.0
        self._ready = asyncio.get_event_loop().create_task(self._start())

    # -- startup and recovery -------------------------------------------------------------------

    async def _start(self) -> None:
        self._handle = ray.get_runtime_context().current_actor
        await self._recover()
        self._reconcile_proxies()
        self._publish()
        asyncio.get_running_loop().create_task(self._control_loop())

    async def _recover(self) -> None:
        blob = ray_private.kv_get(CHECKPOINT_KEY, NAMESPACE)
        if not blob:
            return
        try:
            saved = loads(blob)
        except Exception:
            logger.exception("serve_nb: unreadable checkpoint; starting empty")
            return
        self._token = saved["token"]
        self._http_options = saved["http_options"]
        for name, app in saved["apps"].items():
            deployments = {
                dname: DeploymentState(DeploymentID(name, dname), spec, target, removing=removing)
                for dname, (spec, target, removing) in app["deployments"].items()
            }
            self._apps[name] = AppState(
                name, app["route_prefix"], app["ingress"], deployments, app["deployed_at"], app["deleting"], app["was_running"]
            )
        await self._adopt_replicas()

    async def _adopt_replicas(self) -> None:
        """Find replicas by name after a restart; keep the healthy ones, stop strays."""
        try:
            named = ray.util.list_named_actors(all_namespaces=True)
        except Exception:
            return
        for entry in named:
            name = entry.get("name", "")
            if entry.get("namespace") == NAMESPACE and name.startswith(PROXY_PREFIX):
                await self._adopt_proxy(name)
                continue
            if entry.get("namespace") != NAMESPACE or not name.startswith(REPLICA_PREFIX):
                continue
            try:
                app, dname, rid = name[len(REPLICA_PREFIX) :].split("#")
                actor = ray.get_actor(name, namespace=NAMESPACE)
            except Exception:
                continue
            state = self._apps.get(app, None)
            dstate = state.deployments.get(dname) if state else None
            if dstate is None:
                ray.kill(actor, no_restart=True)
                continue
            try:
                meta = await asyncio.wait_for(actor.get_metadata.remote(), 5.0)
            except Exception:
                ray.kill(actor, no_restart=True)
                continue
            if meta.info is None:  # never finished starting: start afresh
                ray.kill(actor, no_restart=True)
                continue
            record = ReplicaRecord(rid, actor, meta.version, meta.config_version, ReplicaState.RUNNING, meta.started_at, meta.info)
            dstate.replicas[rid] = record
            dstate.methods = meta.methods or dstate.methods
            self._watch(dstate, record)

    async def _adopt_proxy(self, name: str) -> None:
        try:
            actor = ray.get_actor(name, namespace=NAMESPACE)
            serving = await asyncio.wait_for(actor.is_serving.remote(), 5.0)
        except Exception:
            serving = False
            actor = None
        node_id = name[len(PROXY_PREFIX) :].split("#")[0]
        if not serving or node_id in self._proxies:
            if actor is not None:
                _kill(actor)
            return
        record = ProxyRecord(node_id, actor, "HEALTHY")
        self._proxies[node_id] = record
        record.tasks.append(asyncio.get_running_loop().create_task(self._proxy_death_watch(record)))

    def _checkpoint(self) -> None:
        apps = {
            name: {
                "route_prefix": app.route_prefix,
                "ingress": app.ingress,
                "deployed_at": app.deployed_at,
                "deleting": app.deleting,
                "was_running": app.was_running,
                "deployments": {d: (s.spec, s.target, s.removing) for d, s in app.deployments.items()},
            }
            for name, app in self._apps.items()
        }
        blob = dumps({"token": self._token, "http_options": self._http_options, "apps": apps})
        ray_private.kv_put(CHECKPOINT_KEY, blob, NAMESPACE)

    # -- remote API ----------------------------------------------------------------------------

    def _cluster_info(self) -> ClusterInfo:
        return ClusterInfo(self._token, self._http_options, self._epoch)

    async def ready(self) -> ClusterInfo:
        await self._ready
        return self._cluster_info()

    async def listen_for_change(self, known: dict[str, tuple[str, int] | None]) -> dict[str, Any]:
        await self._ready
        return await self._longpoll.listen(known)

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
        app = self._apps.get(name)
        now = time.time()
        if app is None or app.deleting:
            if app is not None:  # re-deploy of an app that is still being deleted: take it back
                app.deleting = False
            app = app or AppState(name, route_prefix, ingress, {}, now)
            self._apps[name] = app
        app.route_prefix, app.ingress, app.deployed_at = route_prefix, ingress, now
        new_names = {s.name for s in specs}
        changed = False
        for spec in specs:
            state = app.deployments.get(spec.name)
            if state is None:
                app.deployments[spec.name] = DeploymentState(DeploymentID(name, spec.name), spec, spec.config.initial_replicas)
                changed = True
                continue
            changed |= self._update_deployment(state, spec)
        for dname, state in app.deployments.items():
            if dname not in new_names and not state.removing:
                state.removing = True
                changed = True
        if changed:
            app.was_running = False
        self._checkpoint()
        self._reconcile_all()
        self._publish()
        return None

    def _update_deployment(self, state: DeploymentState, spec: DeploymentSpec) -> bool:
        old = state.spec
        state.removing = False
        state.spec = spec
        # Re-submitting always clears a failure, so "fix and re-run" (or just re-run) retries.
        was_failed = state.failed_message is not None
        state.failed_message = None
        state.ctor_failures = 0
        auto = spec.config.autoscaling_config
        if auto is None:
            new_target = spec.config.num_replicas or 1
        elif old.config.autoscaling_config is None:
            new_target = auto.start_replicas
        else:
            new_target = min(max(state.target, auto.min_replicas), auto.max_replicas)
        changed = was_failed or old.version != spec.version or old.config_version != spec.config_version
        changed |= new_target != state.target
        state.target = new_target
        state.scaling = None
        return changed

    async def delete_apps(self, names: list[str]) -> None:
        await self._ready
        for name in names:
            app = self._apps.get(name)
            if app is None:
                continue
            app.deleting = True
            for state in app.deployments.values():
                state.removing = True
        self._checkpoint()
        self._reconcile_all()
        self._publish()

    async def get_status(self) -> ServeStatus:
        await self._ready
        return self._status()

    async def shutdown(self, timeout_s: float = 30.0) -> None:
        """Delete every app and wait (bounded) for their replicas to stop; then forget all state."""
        await self._ready
        self._shutting_down = True
        await self.delete_apps(list(self._apps))
        deadline = time.monotonic() + timeout_s
        while self._apps and time.monotonic() < deadline:
            self._wake.set()
            await asyncio.sleep(0.02)
        for app in self._apps.values():  # anything left after the deadline is killed outright
            for state in app.deployments.values():
                for record in state.replicas.values():
                    _kill(record.actor)
        self._apps.clear()
        # Take the proxies out first: the awaits below let their watchers run, and those edit the dict.
        proxies, self._proxies = list(self._proxies.values()), {}
        for record in proxies:
            for task in record.tasks:
                task.cancel()
            try:
                await asyncio.wait_for(record.actor.shutdown.remote(), 2.0)
            except Exception:
                pass
            _kill(record.actor)
        ray_private.kv_delete(CHECKPOINT_KEY, NAMESPACE)
        self._publish()

    async def record_replica_metrics(
        self, app: str, deployment: str, replica_id: str, ongoing: int, log_lines: list[str]
    ) -> None:
        """Pushed by replicas when their in-flight count changes (and as a heartbeat), with new log lines."""
        state = self._deployment(DeploymentID(app, deployment))
        if state is None:
            return
        record = state.replicas.get(replica_id)
        if record is not None:
            record.ongoing = ongoing
        if log_lines:
            stamp = time.strftime("%H:%M:%S")
            self._apps[app].logs.extend(f"{stamp} {deployment}/{replica_id[:6]} | {line}" for line in log_lines)

    async def record_queued(self, app: str, deployment: str, caller: str, queued: int) -> None:
        """Pushed by routers: requests waiting for a replica slot. Wakes the controller for a cold start."""
        state = self._deployment(DeploymentID(app, deployment))
        if state is None:
            return
        state.queued[caller] = (queued, time.time())
        if queued and not any(r.state == ReplicaState.RUNNING for r in state.replicas.values()):
            self._wake.set()

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
            state.events.append(ScalingEvent(time.time(), state.target, num_replicas, "manual scale"))
            state.scaling = "up" if num_replicas > state.target else "down"
            state.target = num_replicas
            self._checkpoint()
            self._reconcile_all()
            self._publish()
        return None

    async def wait_for_route(self, prefix: str, app: str, timeout_s: float = 10.0) -> bool:
        """True once every healthy proxy routes ``prefix`` to ``app`` (so serve.run's caller can send at once)."""
        await self._ready
        proxies = [r for r in self._proxies.values() if r.status == "HEALTHY"]
        results = await asyncio.gather(
            *(r.actor.wait_for_route.remote(prefix, app, timeout_s) for r in proxies), return_exceptions=True
        )
        return all(r is True for r in results)

    async def report_unreachable(self, app: str, deployment: str, replica_id: str) -> None:
        """A router lost its connection to a replica: check it now rather than at the next period."""
        state = self._deployment(DeploymentID(app, deployment))
        record = state.replicas.get(replica_id) if state else None
        if state is not None and record is not None and record.state in (ReplicaState.RUNNING, ReplicaState.UPDATING):
            try:
                await asyncio.wait_for(record.actor.check_health.remote(), 2.0)
            except Exception as exc:
                self._replica_failed(state, record, f"replica {replica_id} is unreachable: {_brief(exc)}")

    # -- reconcile -----------------------------------------------------------------------------

    async def _control_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), RECONCILE_PERIOD_S)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                self._autoscale_all()
                self._reconcile_all()
                self._reconcile_proxies()
                self._record_history()
                self._publish()
            except Exception:
                logger.exception("serve_nb controller: reconcile failed")

    def _autoscale_all(self) -> None:
        now = time.time()
        for app in self._apps.values():
            for state in app.deployments.values():
                config = state.spec.config.autoscaling_config
                if config is None or state.removing or state.failed_message is not None:
                    continue
                state.samples.append((now, state.load(now)))
                while state.samples and now - state.samples[0][0] > config.look_back_period_s:
                    state.samples.popleft()
                average = statistics.fmean(v for _, v in state.samples)
                current = state.target
                decision = decide(current, average, config, now, state.scaling_state)
                state.scaling_state = decision.state
                state.last_decision = decision.reason
                if decision.desired != current:
                    state.events.append(ScalingEvent(now, current, decision.desired, decision.reason))
                    state.scaling = "up" if decision.desired > current else "down"
                    state.target = decision.desired
                    self._checkpoint()

    def _record_history(self) -> None:
        now = time.time()
        for app in self._apps.values():
            running = sum(
                1 for s in app.deployments.values() for r in s.replicas.values() if r.state == ReplicaState.RUNNING
            )
            ongoing = sum(s.load(now) for s in app.deployments.values())
            last = app.history[-1] if app.history else None
            # A point when something changed, else one every 5 s so the chart's time axis moves.
            if last is None or (last[1], last[2]) != (running, ongoing) or now - last[0] >= 5.0:
                app.history.append((round(now, 2), running, ongoing))

    def _deployment(self, dep: DeploymentID) -> DeploymentState | None:
        app = self._apps.get(dep.app)
        return app.deployments.get(dep.name) if app else None

    def _reconcile_all(self) -> None:
        for app in list(self._apps.values()):
            for dname, state in list(app.deployments.items()):
                self._reconcile(state)
                if state.removing and not state.replicas:
                    del app.deployments[dname]
                    self._longpoll.remove(replicas_key(app.name, dname))
            if app.deleting and not app.deployments:
                del self._apps[app.name]
                self._checkpoint()

    def _reconcile(self, state: DeploymentState) -> None:
        now = time.time()
        for action in reconcile.plan(state.goal(), [r.view(now) for r in state.replicas.values()]):
            if isinstance(action, reconcile.StartReplicas):
                for _ in range(action.count):
                    self._start_replica(state)
            elif isinstance(action, reconcile.StopReplica):
                self._stop_replica(state, state.replicas[action.replica_id])
            elif isinstance(action, reconcile.ReconfigureReplica):
                self._reconfigure_replica(state, state.replicas[action.replica_id])

    def _start_replica(self, state: DeploymentState) -> None:
        spec = state.spec
        rid = secrets.token_hex(4)
        opts = spec.config.ray_actor_options
        actor_options: dict[str, Any] = {
            "name": replica_actor_name(state.dep, rid),
            "namespace": NAMESPACE,
            "lifetime": "detached",
            "max_restarts": 0,
            "max_concurrency": 1000,
            "scheduling_strategy": "SPREAD",
        }
        for key in ("num_cpus", "num_gpus", "memory", "resources", "accelerator_type", "runtime_env"):
            if opts.get(key) is not None:
                actor_options[key] = opts[key]
        init = ReplicaInit(
            state.dep.app, state.dep.name, rid, spec.def_blob, spec.args_blob, spec.is_class, spec.version,
            spec.config_version, spec.config.max_ongoing_requests, spec.config.graceful_shutdown_wait_loop_s, self._token,
            self._handle, self._cluster_info(),
        )
        actor = self._replica_cls.options(**actor_options).remote(init)
        record = ReplicaRecord(rid, actor, spec.version, spec.config_version, ReplicaState.STARTING, time.time())
        state.replicas[rid] = record
        loop = asyncio.get_running_loop()
        record.tasks.append(loop.create_task(self._initialize(state, record)))
        record.tasks.append(loop.create_task(self._await_placement(record)))

    async def _await_placement(self, record: ReplicaRecord) -> None:
        try:
            await record.actor.ping.remote()
            record.scheduled = True
        except Exception:
            pass

    async def _initialize(self, state: DeploymentState, record: ReplicaRecord) -> None:
        try:
            result: InitResult = await record.actor.initialize.remote(state.spec.config.user_config)
        except Exception as exc:  # the process died while starting (OOM, killed, bad runtime_env, ...)
            result = InitResult(ok=False, error=f"The replica process failed while starting: {_brief(exc)}")
        if result.ok:
            # A replica counts as started once it also passes a first health check.
            try:
                await asyncio.wait_for(record.actor.check_health.remote(), state.spec.config.health_check_timeout_s)
            except Exception as exc:
                result = InitResult(ok=False, error=f"check_health() failed on a new replica: {_health_error(exc)}")
        if record.state != ReplicaState.STARTING:
            return  # stopped meanwhile
        if not result.ok:
            state.replicas.pop(record.replica_id, None)
            _kill(record.actor)
            if record.version == state.spec.version:
                state.ctor_failures += 1
                if state.ctor_failures >= MAX_CONSTRUCTOR_ATTEMPTS:
                    state.failed_message = (
                        f"The replica constructor failed {state.ctor_failures} times; giving up until the "
                        f"deployment is updated. Last error:\n{result.error}"
                    )
        else:
            record.info = result.info
            record.state = ReplicaState.RUNNING
            state.methods = result.methods
            if all(r.health_failures == 0 for r in state.replicas.values()):
                state.unhealthy_message = None  # the replacement is up: healthy again
            if record.version == state.spec.version:
                state.ctor_failures = 0
            self._watch(state, record)
        self._wake.set()

    def _watch(self, state: DeploymentState, record: ReplicaRecord) -> None:
        loop = asyncio.get_running_loop()
        record.tasks.append(loop.create_task(self._death_watch(state, record)))
        record.tasks.append(loop.create_task(self._health_loop(state, record)))

    async def _death_watch(self, state: DeploymentState, record: ReplicaRecord) -> None:
        try:
            await record.actor.wait_for_death.remote()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if record.state != ReplicaState.STOPPING:
                self._replica_failed(state, record, f"replica {record.replica_id} died: {_brief(exc)}")

    async def _health_loop(self, state: DeploymentState, record: ReplicaRecord) -> None:
        while record.state in (ReplicaState.RUNNING, ReplicaState.UPDATING):
            config = state.spec.config
            await asyncio.sleep(config.health_check_period_s)
            if record.state not in (ReplicaState.RUNNING, ReplicaState.UPDATING):
                return
            try:
                await asyncio.wait_for(record.actor.check_health.remote(), config.health_check_timeout_s)
                record.health_failures = 0
                if state.unhealthy_message and all(r.health_failures == 0 for r in state.replicas.values()):
                    state.unhealthy_message = None
                    self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                record.health_failures += 1
                if record.health_failures >= HEALTH_FAILURES_BEFORE_REPLACE:
                    self._replica_failed(
                        state, record,
                        f"replica {record.replica_id} failed {record.health_failures} health checks in a row: {_health_error(exc)}",
                    )
                    return

    def _replica_failed(self, state: DeploymentState, record: ReplicaRecord, why: str) -> None:
        """Drop a broken replica at once; reconcile starts a replacement."""
        if state.replicas.get(record.replica_id) is not record:
            return
        logger.warning("serve_nb: %s", why)
        state.replicas.pop(record.replica_id)
        record.state = ReplicaState.STOPPING
        for task in record.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        _kill(record.actor)
        state.unhealthy_message = why
        self._wake.set()

    def _stop_replica(self, state: DeploymentState, record: ReplicaRecord) -> None:
        if record.state == ReplicaState.STOPPING:
            return
        was_started = record.info is not None
        record.state = ReplicaState.STOPPING
        for task in record.tasks:
            task.cancel()
        record.tasks = [asyncio.get_running_loop().create_task(self._graceful_stop(state, record, was_started))]

    async def _graceful_stop(self, state: DeploymentState, record: ReplicaRecord, was_started: bool) -> None:
        self._publish()  # routers drop it before it starts draining
        if was_started:
            try:
                timeout = state.spec.config.graceful_shutdown_timeout_s
                # The replica bounds its own drain by `timeout`; the extra time is for __del__.
                await asyncio.wait_for(record.actor.prepare_for_shutdown.remote(timeout), timeout + 5.0)
            except Exception:
                pass  # timed out or already dead: force-kill below
        _kill(record.actor)
        if state.replicas.get(record.replica_id) is record:
            del state.replicas[record.replica_id]
        self._wake.set()

    def _reconfigure_replica(self, state: DeploymentState, record: ReplicaRecord) -> None:
        record.state = ReplicaState.UPDATING
        spec = state.spec
        target_version = spec.config_version

        async def run() -> None:
            try:
                error = await record.actor.reconfigure.remote(
                    spec.config.user_config, spec.config.max_ongoing_requests, target_version
                )
            except Exception as exc:
                error = f"reconfigure failed: {_brief(exc)}"
            if record.state != ReplicaState.UPDATING:
                return
            record.state = ReplicaState.RUNNING
            record.config_version = target_version  # not retried until the config changes again
            if error:
                state.failed_message = f"reconfigure(user_config) raised:\n{error}"
            self._wake.set()

        record.tasks.append(asyncio.get_running_loop().create_task(run()))

    # -- proxies -------------------------------------------------------------------------------

    def _proxy_nodes(self) -> list[str]:
        location = self._http_options.location
        if location == "NoServer":
            return []
        nodes = self._alive_nodes()
        if location == "HeadOnly":
            nodes = [n for n in nodes if "node:__internal_head__" in n.get("Resources", {})]
        return [n["NodeID"] for n in nodes]

    def _reconcile_proxies(self) -> None:
        if self._shutting_down:  # shutdown() stops them gracefully once the apps are gone
            return
        try:
            wanted = set(self._proxy_nodes())
        except Exception:
            return
        now = time.time()
        for node_id in list(self._proxies):
            if node_id not in wanted:
                record = self._proxies.pop(node_id)
                for task in record.tasks:
                    task.cancel()
                _kill(record.actor)
        for node_id in wanted:
            record = self._proxies.get(node_id)
            if record is None or (record.status == "UNHEALTHY" and now >= record.retry_at):
                self._start_proxy(node_id, record)

    def _start_proxy(self, node_id: str, previous: ProxyRecord | None) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actor = self._proxy_cls.options(
            name=proxy_actor_name(node_id),
            namespace=NAMESPACE,
            lifetime="detached",
            max_restarts=0,
            num_cpus=0,
            max_concurrency=1000,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote(self._http_options, node_id, self._handle, self._cluster_info())
        record = ProxyRecord(node_id, actor, message=previous.message if previous else "")
        self._proxies[node_id] = record
        record.tasks.append(asyncio.get_running_loop().create_task(self._run_proxy(record)))

    async def _run_proxy(self, record: ProxyRecord) -> None:
        try:
            error = await record.actor.start.remote()
        except Exception as exc:
            error = f"The proxy process failed while starting: {_brief(exc)}"
        if self._proxies.get(record.node_id) is not record:
            return
        if error:
            record.status, record.message = "UNHEALTHY", error
            record.retry_at = time.time() + PROXY_RETRY_S
            _kill(record.actor)
        else:
            record.status, record.message = "HEALTHY", ""
            record.tasks.append(asyncio.get_running_loop().create_task(self._proxy_death_watch(record)))
        self._wake.set()

    async def _proxy_death_watch(self, record: ProxyRecord) -> None:
        try:
            await record.actor.wait_for_death.remote()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._proxies.get(record.node_id) is record:
                logger.warning("serve_nb: the HTTP proxy on node %s died (%s); restarting it", record.node_id, _brief(exc))
                del self._proxies[record.node_id]
                self._wake.set()

    # -- publishing ----------------------------------------------------------------------------

    def _replica_set(self, app: AppState, state: DeploymentState) -> ReplicaSet:
        serving = tuple(
            sorted(
                (r.info for r in state.replicas.values()
                 if r.info is not None and r.state in (ReplicaState.RUNNING, ReplicaState.UPDATING)),
                key=lambda i: i.replica_id,
            )
        )
        unavailable = None
        if not serving:
            if app.deleting or state.removing:
                unavailable = f"Application '{app.name}' is being deleted."
            elif state.failed_message is not None:
                unavailable = f"Deployment '{state.dep.name}' of application '{app.name}' failed to deploy:\n{state.failed_message}"
        config = state.spec.config
        return ReplicaSet(serving, config.max_ongoing_requests, config.max_queued_requests, unavailable, state.methods)

    def _status(self) -> ServeStatus:
        apps: dict[str, ApplicationStatusInfo] = {}
        for app in self._apps.values():
            deployments: dict[str, DeploymentStatusInfo] = {}
            for dname, state in app.deployments.items():
                if state.removing and not app.deleting:
                    continue
                replicas = [(r.version, r.state) for r in state.replicas.values()]
                facts = DeploymentFacts(
                    state.goal().target, state.spec.version, replicas, state.failed_message,
                    state.unhealthy_message, state.scaling,
                )
                status, message = deployment_status(facts)
                if status == DeploymentStatus.HEALTHY:
                    state.scaling = None
                message = message or self._pending_message(state)
                deployments[dname] = DeploymentStatusInfo(
                    dname, status, message, replica_state_counts(replicas), state.goal().target
                )
            app_status, app_message = application_status(
                [(d.name, d.status, d.message) for d in deployments.values()],
                deleting=app.deleting,
                was_running=app.was_running,
            )
            if app_status == ApplicationStatus.RUNNING:
                app.was_running = True
            apps[app.name] = ApplicationStatusInfo(
                app.name, app_status, app_message, app.route_prefix, app.ingress, deployments, app.deployed_at
            )
        options = self._http_options
        proxies = {
            node_id: ProxyStatusInfo(node_id, f"{options.host}:{options.port}", r.status, r.message)
            for node_id, r in self._proxies.items()
        }
        return ServeStatus(applications=apps, proxies=proxies)

    def _pending_message(self, state: DeploymentState) -> str:
        """Say why replicas are not up yet when resources are the likely cause (no silent hangs)."""
        now = time.time()
        starting = [r for r in state.replicas.values() if r.state == ReplicaState.STARTING]
        if not starting:
            return ""
        need = _resource_request(state.spec.config.ray_actor_options)
        if not _fits_any_node(need, self._node_resources()):
            return (
                f"{PENDING_RESOURCES_TAG}: each replica asks for {need}, more than any node in the cluster has. "
                "Lower ray_actor_options (e.g. {'num_cpus': 0.5}) or add a larger node."
            )
        slow = [r for r in starting if now - r.started_at > 10 and not r.scheduled]
        if not slow:
            return ""
        return (
            f"{PENDING_RESOURCES_TAG}: {len(slow)} replica(s) have been starting for over 10 s. Each asks for {need}; "
            "the cluster may not have that much free (other replicas hold it), or the constructor is slow. "
            "Lower ray_actor_options, num_replicas, or free resources."
        )

    def _alive_nodes(self) -> list[dict[str, Any]]:
        """ray.nodes() is a GCS call: refreshed at most every 2 s."""
        now = time.monotonic()
        if now - self._nodes_checked_at > 2.0:
            self._nodes_checked_at = now
            try:
                self._nodes_cache = [n for n in ray.nodes() if n.get("Alive")]
            except Exception:
                pass
        return self._nodes_cache

    def _node_resources(self) -> list[dict[str, float]]:
        return [n.get("Resources", {}) for n in self._alive_nodes()]

    def _publish(self) -> None:
        routes: dict[str, tuple[str, str]] = {}
        for app in self._apps.values():
            if app.route_prefix is not None and not app.deleting:
                routes[app.route_prefix] = (app.name, app.ingress)
            for dname, state in app.deployments.items():
                self._longpoll.publish(replicas_key(app.name, dname), self._replica_set(app, state))
        status = self._status()
        self._longpoll.publish(ROUTES_KEY, routes)
        self._longpoll.publish(STATUS_KEY, status)
        for app in self._apps.values():
            self._longpoll.publish(app_key(app.name), self._app_detail(app, status))
        for key in self._longpoll.store.keys():
            if key.startswith("app:") and key[4:] not in self._apps:
                self._longpoll.remove(key)

    def _app_detail(self, app: AppState, status: ServeStatus) -> AppDetail:
        info = status.applications.get(app.name)
        now = time.time()
        deployments = []
        for dname, state in app.deployments.items():
            dinfo = info.deployments.get(dname) if info else None
            if dinfo is None:
                continue
            replicas = tuple(
                ReplicaDetail(r.replica_id, str(r.state), r.info.node_id if r.info else "", r.info.pid if r.info else 0,
                              r.started_at, r.ongoing, r.version)
                for r in sorted(state.replicas.values(), key=lambda r: r.started_at)
            )
            auto = state.spec.config.autoscaling_config
            deployments.append(DeploymentDetail(
                dname, str(dinfo.status), dinfo.message, dinfo.target_replicas,
                sum(1 for r in state.replicas.values() if r.state == ReplicaState.RUNNING), replicas,
                auto.to_dict() if auto else None, state.last_decision, tuple(state.events), state.load(now),
            ))
        options = self._http_options
        address = f"{options.host}:{options.port}" if options.location != "NoServer" else None
        return AppDetail(
            app.name, str(info.status) if info else "", info.message if info else "", app.route_prefix, app.ingress,
            address, tuple(deployments), tuple(app.history), tuple(app.logs),
        )


PENDING_RESOURCES_TAG = "Waiting for resources"


def _resource_request(options: dict[str, Any]) -> dict[str, float]:
    need = {"CPU": float(options.get("num_cpus", 1) or 0), "GPU": float(options.get("num_gpus", 0) or 0)}
    if options.get("memory"):
        need["memory"] = float(options["memory"])
    need.update({k: float(v) for k, v in (options.get("resources") or {}).items()})
    return {k: v for k, v in need.items() if v > 0}


def _fits_any_node(need: dict[str, float], nodes: list[dict[str, float]]) -> bool:
    if not nodes:
        return True  # unknown: do not claim it cannot fit
    return any(all(node.get(k, 0.0) >= v for k, v in need.items()) for node in nodes)


def _kill(actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:
        pass


def _health_error(exc: BaseException) -> str:
    """The user's error from check_health (Ray wraps it), or what went wrong (timeout, death)."""
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    cause = getattr(exc, "cause", None)
    return _brief(cause if isinstance(cause, BaseException) else exc)


def _brief(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


class ServeController:
    """The controller actor: only the remote methods, each handing over to a ControllerCore.

    Kept thin because when a driver first creates an actor, Ray wraps every method of its class for
    tracing and disassembles them all to spot duplicate exports: ~0.1 s of the first deploy for the
    ~50 methods of ControllerCore, a few milliseconds for these."""

    def __init__(self, http_options: HTTPOptions | None = None) -> None:
        self._core = ControllerCore(http_options)

    async def ready(self) -> ClusterInfo:
        return await self._core.ready()

    async def listen_for_change(self, known: dict[str, tuple[str, int] | None]) -> dict[str, Any]:
        return await self._core.listen_for_change(known)

    async def deploy_app(self, name: str, route_prefix: str | None, ingress: str, specs: list[DeploymentSpec]) -> str | None:
        return await self._core.deploy_app(name, route_prefix, ingress, specs)

    async def delete_apps(self, names: list[str]) -> None:
        await self._core.delete_apps(names)

    async def get_status(self) -> ServeStatus:
        return await self._core.get_status()

    async def shutdown(self, timeout_s: float = 30.0) -> None:
        await self._core.shutdown(timeout_s)

    async def record_replica_metrics(
        self, app: str, deployment: str, replica_id: str, ongoing: int, log_lines: list[str]
    ) -> None:
        await self._core.record_replica_metrics(app, deployment, replica_id, ongoing, log_lines)

    async def record_queued(self, app: str, deployment: str, caller: str, queued: int) -> None:
        await self._core.record_queued(app, deployment, caller, queued)

    async def scale_deployment(self, app: str, deployment: str, num_replicas: int) -> str | None:
        return await self._core.scale_deployment(app, deployment, num_replicas)

    async def wait_for_route(self, prefix: str, app: str, timeout_s: float = 10.0) -> bool:
        return await self._core.wait_for_route(prefix, app, timeout_s)

    async def report_unreachable(self, app: str, deployment: str, replica_id: str) -> None:
        await self._core.report_unreachable(app, deployment, replica_id)
