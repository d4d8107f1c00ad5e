"""One deployment and its replicas: desired state (version, config, target), and each replica's lifecycle.

The role of Ray Serve's ``DeploymentState``: the controller tells it what the deployment should be
and asks it to reconcile; it starts, health-checks, reconfigures and stops replicas. A replica's
state changes only through the named phases of ``ReplicaRecord`` (STARTING -> RUNNING <-> UPDATING,
any -> STOPPING). Actors are reached through the ``ReplicaHandle`` protocol, so all of this runs
in unit tests with fakes.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
from dataclasses import dataclass
from typing import Any, Callable, Coroutine, Mapping, Sequence

from serve_nb.common.messages import DeploymentSpec, InitResult, ReplicaMetadata
from serve_nb.control.clock import Clock
from serve_nb.control.protocols import ActorCallFailed, ReplicaHandle
from serve_nb.control.replica_record import ReplicaRecord
from serve_nb.core import reconcile
from serve_nb.core.autoscaling import ScalingState, decide
from serve_nb.core.policy import LoadWindow, is_loopback, redeploy_target
from serve_nb.core.request_stats import RequestWindow, TallySnapshot
from serve_nb.core.resources import (NodeInfo, StartingReplica, fits, no_room_message, node_with_room,
                                     pending_resources_message, resource_request)
from serve_nb.core.status import DeploymentFacts, Scaling, format_duration, slow_init_message, slow_initializers
from serve_nb.types import (
    DeploymentID,
    DeploymentStatus,
    ReplicaDetail,
    ReplicaSet,
    ReplicaState,
    ScalingEvent,
)

logger = logging.getLogger(__name__)

# A constructor that fails this often at one version is a bug in it, not bad luck: stop retrying.
MAX_CONSTRUCTOR_ATTEMPTS = 3
# One slow or failed check is noise (a long request, GC); this many in a row means replace it.
HEALTH_FAILURES_BEFORE_REPLACE = 3
# A router that stopped reporting its queue (gone, or idle) no longer counts after this.
QUEUED_REPORT_TTL_S = 10.0
# A router's "unreachable" report is checked at once; a live replica answers well within this.
UNREACHABLE_CHECK_TIMEOUT_S = 2.0
# Scaling decisions kept for the app widget.
SCALING_EVENTS_KEPT = 50
# Recent @serve.batch batch sizes kept for the app widget.
BATCH_SIZES_KEPT = 200

@dataclass(frozen=True)
class DeploymentContext:
    """What a deployment needs from the controller around it."""

    clock: Clock
    launch: Callable[[DeploymentID, str, DeploymentSpec, str | None], ReplicaHandle]  # a replica actor (on a node)
    wake: Callable[[], None]  # run the reconcile loop soon
    publish: Callable[[], None]  # publish replica sets now (routers drop a replica before it drains)
    nodes: Callable[[], Sequence[NodeInfo]] = tuple  # the alive nodes (for max_replicas_per_node)
    health: Callable[[DeploymentID, str, bool], None] = lambda *_: None  # a replica is (un)healthy: the metric
    node_lost: Callable[[], None] = lambda: None  # a replica died, maybe with its node: refresh the node list
    logs: Callable[[DeploymentID, str, Sequence[str]], None] = lambda *_: None  # lines a failed start logged


class DeploymentState:
    """One deployment's desired state and its replicas."""

    def __init__(self, dep: DeploymentID, spec: DeploymentSpec, target: int, ctx: DeploymentContext,
                 removing: bool = False) -> None:
        self.dep = dep
        self.spec = spec
        self.target = target
        self.removing = removing  # dropped from its app by a redeploy, or its app is being deleted
        self.replicas: dict[str, ReplicaRecord] = {}
        self.methods: tuple[str, ...] = ()
        self.ctor_failures = 0
        self.failed_message: str | None = None  # the current version failed to deploy
        self.failed_health = False  # ... because its new replicas failed their first health check
        self.unhealthy_message: str | None = None  # replicas failed after having been healthy
        self.scaling: Scaling | None = None  # a scaling decision is being carried out
        self.queued: dict[str, tuple[int, float]] = {}  # caller id -> (queued, when reported)
        self.last_decision = ""
        self.events: collections.deque[ScalingEvent] = collections.deque(maxlen=SCALING_EVENTS_KEPT)
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=BATCH_SIZES_KEPT)
        self.requests = RequestWindow(ctx.clock.time())  # what its replicas served lately, for the status
        self.unplaced = 0  # replicas the last pass could not place (max_replicas_per_node)
        self.no_room = ""  # why, for the status
        self._window = LoadWindow()
        self._scaling_state = ScalingState()
        self._ctx = ctx

    # -- desired state ----------------------------------------------------------------------------

    def goal(self) -> reconcile.Goal:
        target = 0 if self.removing else self.target
        return reconcile.Goal(self.spec.version, self.spec.config_version, target, self.failed_message is not None,
                              self.unplaced)

    def load(self, now: float) -> float:
        """Ongoing requests on serving replicas plus requests queued in callers (fresh reports only)."""
        executing = sum(r.ongoing for r in self.replicas.values() if r.serving)
        waiting = sum(q for q, t in self.queued.values() if now - t < QUEUED_REPORT_TTL_S)
        return float(executing + waiting)

    def update(self, spec: DeploymentSpec) -> bool:
        """Redeployed with ``spec``; True if anything is to change. Re-submitting always clears a failure,
        so "fix and re-run" (or just re-run) retries."""
        old = self.spec
        was_failed = self.failed_message is not None
        self.removing = False
        self.spec = spec
        self.failed_message = None
        self.failed_health = False
        self.ctor_failures = 0
        new_target = redeploy_target(old.config, spec.config, self.target)
        changed = was_failed or old.version != spec.version or old.config_version != spec.config_version
        changed |= new_target != self.target
        self.target = new_target
        self.scaling = None
        return changed

    def remove(self) -> bool:
        """Stop all replicas and go (the app dropped it or is being deleted); True if that is news."""
        if self.removing:
            return False
        self.removing = True
        return True

    def scale(self, target: int, now: float, reason: str) -> None:
        """A scaling decision: remember it for the widget, and move the target."""
        self.events.append(ScalingEvent(now, self.target, target, reason))
        self.scaling = Scaling.UP if target > self.target else Scaling.DOWN
        self.target = target

    def autoscale(self, now: float) -> bool:
        """One autoscaling step (a load sample, then the policy); True if the target changed."""
        config = self.spec.config.autoscaling_config
        if config is None or self.removing or self.failed_message is not None:
            return False
        average = self._window.add(now, self.load(now), config.look_back_period_s)
        decision = decide(self.target, average, config, now, self._scaling_state)
        self._scaling_state = decision.state
        self.last_decision = decision.reason
        if decision.desired == self.target:
            return False
        self.scale(decision.desired, now, decision.reason)
        return True

    def settle(self, status: DeploymentStatus) -> None:
        """Apply what the latest status says: a scaling that reached its target is over."""
        if status == DeploymentStatus.HEALTHY:
            self.scaling = None

    def record_metrics(
        self, replica_id: str, ongoing: int, models: Sequence[str] = (), batch_sizes: Sequence[int] = (),
        requests: TallySnapshot | None = None,
    ) -> bool:
        """A replica's report; True if the models it holds changed (routers must hear of it). The requests it
        served count even if it is on its way out."""
        self.requests.add(self._ctx.clock.time(), requests)
        record = self.replicas.get(replica_id)
        if record is None:
            return False
        record.ongoing = ongoing
        self.batch_sizes.extend(batch_sizes)
        models = tuple(models)
        if models == record.models:
            return False
        record.models = models
        return True

    def record_queued(self, caller: str, queued: int, now: float) -> None:
        """A router's queue; requests waiting with no replica running wake the loop (cold start)."""
        self.queued[caller] = (queued, now)
        if queued and not any(r.state == ReplicaState.RUNNING for r in self.replicas.values()):
            self._ctx.wake()

    # -- reading ----------------------------------------------------------------------------------

    def facts(self) -> DeploymentFacts:
        replicas = [(r.version, r.state) for r in self.replicas.values()]
        return DeploymentFacts(self.goal().target, self.spec.version, replicas, self.failed_message,
                               self.unhealthy_message, self.scaling, self._in_init(), self.failed_health,
                               self.requests.summary(self._ctx.clock.time()))

    def _in_init(self) -> dict[str, float]:
        now = self._ctx.clock.time()
        times = {rid: r.in_init_for(now) for rid, r in self.replicas.items()}
        return {rid: t for rid, t in times.items() if t is not None}

    def pending_resources(self, nodes: Callable[[], Sequence[Mapping[str, float]]]) -> str:
        """Why replicas wait for resources, if they likely do; "" otherwise. ``nodes`` asked only if needed."""
        if self.no_room:
            return self.no_room
        starting = [StartingReplica(r.started_at, r.placed) for r in self.replicas.values()
                    if r.state == ReplicaState.STARTING]
        if not starting:
            return ""
        return pending_resources_message(self.spec.config.ray_actor_options, nodes(), starting, self._ctx.clock.time())

    def _recovered(self) -> bool:
        """A failure is over once every replica passes its checks and lost ones are all replaced (until then
        the status says it is replacing them; "updating" is a new version rolling out)."""
        current = [r for r in self.replicas.values()
                   if r.state == ReplicaState.RUNNING and r.version == self.spec.version]
        return all(r.health_failures == 0 for r in self.replicas.values()) and len(current) >= self.goal().target

    def unresponsive_nodes(self) -> set[str]:  # nodes of replicas whose last check got no answer in time
        return {r.node_id for r in self.replicas.values() if r.unanswered and r.node_id}

    def replicas_per_node(self) -> collections.Counter[str]:
        return collections.Counter(r.node_id for r in self.replicas.values() if r.node_id)

    def running(self) -> int:
        return sum(1 for r in self.replicas.values() if r.state == ReplicaState.RUNNING)

    def replica_details(self) -> list[ReplicaDetail]:
        return [r.detail() for r in sorted(self.replicas.values(), key=lambda r: r.started_at)]

    def replica_set(self, app: str, app_deleting: bool) -> ReplicaSet:
        """What routers get: the serving replicas, or why there are none."""
        serving = tuple(sorted((r.info for r in self.replicas.values() if r.info is not None and r.serving),
                               key=lambda i: i.replica_id))
        unavailable = None
        if not serving:
            if app_deleting or self.removing:
                unavailable = f"Application '{app}' is being deleted."
            elif self.failed_message is not None:
                unavailable = f"Deployment '{self.dep.name}' of application '{app}' failed to deploy:\n{self.failed_message}"
        waiting = "" if serving or unavailable else slow_init_message(slow_initializers(self._in_init()))
        config = self.spec.config
        models = {r.replica_id: r.models for r in self.replicas.values() if r.models and r.serving}
        return ReplicaSet(serving, config.max_ongoing_requests, config.max_queued_requests, unavailable, self.methods,
                          waiting, models)

    # -- reconciling --------------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Start, stop or reconfigure replicas as ``reconcile.plan`` says."""
        now = self._ctx.clock.time()
        self._enforce_init_timeout(now)
        actions = reconcile.plan(self.goal(), [r.view(now) for r in self.replicas.values()])
        unplaced_before, self.unplaced, self.no_room = self.unplaced, 0, ""
        for action in actions:
            if isinstance(action, reconcile.StartReplicas):
                for _ in range(action.count):
                    self._start_replica()
            elif isinstance(action, reconcile.StopReplica):
                self._stop_replica(self.replicas[action.replica_id])
            elif isinstance(action, reconcile.ReconfigureReplica):
                self._reconfigure_replica(self.replicas[action.replica_id])
        if self.unplaced != unplaced_before:
            self._ctx.wake()  # the next pass lets an old replica make room (see reconcile.Goal.unplaced)

    def adopt(self, replica_id: str, actor: ReplicaHandle, meta: ReplicaMetadata) -> None:
        """Take over a replica found running after a controller restart."""
        record = ReplicaRecord.adopted(replica_id, actor, meta)
        self.replicas[replica_id] = record
        self.methods = meta.methods or self.methods
        self._watch(record)

    async def check_reachable(self, replica_id: str) -> None:
        """A router lost its connection to a replica: check it now rather than at the next period."""
        record = self.replicas.get(replica_id)
        if record is None or not record.serving:
            return
        try:
            await record.actor.responsive(UNREACHABLE_CHECK_TIMEOUT_S)  # not its health: a busy loop is no fault
        except ActorCallFailed as exc:
            self.fail(record, f"replica {replica_id} is unreachable: {exc.brief}")

    def check_node(self, node_id: str) -> None:
        """Its node does not answer: check each serving replica there at once (``check_reachable``)."""
        for record in [r for r in self.replicas.values() if r.serving and r.node_id == node_id]:
            self._spawn(record, self.check_reachable(record.replica_id))

    def fail(self, record: ReplicaRecord, why: str) -> None:
        """Drop a broken replica at once; the next reconcile starts a replacement."""
        if self.replicas.get(record.replica_id) is not record:
            return
        logger.warning("serve_nb: %s", why)
        self._ctx.health(self.dep, record.replica_id, False)
        self.replicas.pop(record.replica_id)
        record.begin_stop()
        record.actor.kill()
        self.unhealthy_message = why
        self._ctx.wake()

    def open_to_other_machines(self) -> None:
        """The cluster now spans machines: replicas that listen on loopback only (started while it was
        one machine) also listen on their node's IP, and routers everywhere learn the new address."""
        for record in list(self.replicas.values()):
            if record.serving and record.info is not None and is_loopback(record.info.host) and not record.opening:
                record.opening = True
                self._spawn(record, self._open_to_network(record))

    async def _open_to_network(self, record: ReplicaRecord) -> None:
        try:
            info = await record.actor.listen_on_node_ip()
        except ActorCallFailed as exc:
            record.opening = False  # tried again at the next pass, unless the death watch removes it first
            logger.warning("serve_nb: replica %s could not listen on its node's IP: %s", record.replica_id, exc.brief)
            return
        if record.serving:
            record.info = info
            self._ctx.publish()

    def kill_all(self) -> None:
        """Kill every replica outright (shutdown's last resort after its deadline)."""
        for record in self.replicas.values():
            record.actor.kill()

    # -- one replica's lifecycle ----------------------------------------------------------------------

    def _spawn(self, record: ReplicaRecord, work: Coroutine[Any, Any, None]) -> None:
        record.tasks.append(asyncio.get_running_loop().create_task(work))

    def _start_replica(self) -> None:
        spec = self.spec
        replica_id = secrets.token_hex(4)
        node_id = None
        if spec.config.max_replicas_per_node is not None:
            node_id = self._node_with_room(spec.config.max_replicas_per_node)
            if node_id is None:
                self.unplaced += 1
                return
        try:
            actor = self._ctx.launch(self.dep, replica_id, spec, node_id)
        except Exception as exc:  # noqa: BLE001 - Ray refused the actor's options (e.g. a bad runtime_env)
            # The same options would be refused again: the deploy fails now, with Ray's reason.
            self.failed_message = f"Ray could not create a replica actor: {type(exc).__name__}: {exc}"
            return
        record = ReplicaRecord(replica_id, actor, spec.version, spec.config_version, self._ctx.clock.time(),
                               node_id=node_id or "")
        self.replicas[replica_id] = record
        self._spawn(record, self._initialize(record))
        self._spawn(record, self._await_placement(record))

    def _node_with_room(self, limit: int) -> str | None:
        """Where a new replica may go under ``max_replicas_per_node``; None (and why, in the status) if nowhere."""
        nodes = self._ctx.nodes()
        need = resource_request(self.spec.config.ray_actor_options)
        node_id = node_with_room(nodes, self.replicas_per_node(), limit, need)
        if node_id is None:
            able = sum(1 for n in nodes if fits(n.resources, need))
            self.no_room = no_room_message(limit, able, self.goal().target)
        return node_id

    async def _await_placement(self, record: ReplicaRecord) -> None:
        if await record.actor.wait_placed():
            record.on_placed(self._ctx.clock.time())

    async def _initialize(self, record: ReplicaRecord) -> None:
        health_failed = False
        try:
            result = await record.actor.initialize()
        except ActorCallFailed as exc:  # the process died while starting (OOM, killed, bad runtime_env, ...)
            result = InitResult(ok=False, error=f"The replica process failed while starting: {exc.brief}")
        if result.ok:  # a replica counts as started once it also passes a first health check
            try:
                await record.actor.check_health(self.spec.config.health_check_timeout_s)
            except ActorCallFailed as exc:
                result = InitResult(ok=False, error=f"check_health() failed on a new replica: {exc.cause}")
                health_failed = True
        if result.log_lines:  # a replica that failed to start never reports its lines otherwise
            self._ctx.logs(self.dep, record.replica_id, result.log_lines)
        if record.state != ReplicaState.STARTING:
            return  # stopped meanwhile
        if result.ok:
            self._on_started(record, result)
        else:
            self._on_start_failed(record, result.error, health_failed)
        self._ctx.wake()

    def _on_started(self, record: ReplicaRecord, result: InitResult) -> None:
        record.on_initialized(result.info)
        self._ctx.health(self.dep, record.replica_id, True)
        self.methods = result.methods
        if self._recovered():
            self.unhealthy_message = None  # the replacements are up: healthy again
        if record.version == self.spec.version:
            self.ctor_failures = 0
        self._watch(record)

    def _on_start_failed(self, record: ReplicaRecord, error: str, health_failed: bool = False) -> None:
        self._discard(record)
        if record.version != self.spec.version:
            return  # an old version's failure says nothing about the current one
        self.ctor_failures += 1
        if self.ctor_failures >= MAX_CONSTRUCTOR_ATTEMPTS:
            what = "New replicas failed their first health check" if health_failed else "The replica constructor failed"
            self.failed_message = (
                f"{what} {self.ctor_failures} times; giving up until the deployment is updated. Last error:\n{error}"
            )
            self.failed_health = health_failed  # Ray Serve reports this deployment UNHEALTHY (its app DEPLOY_FAILED)

    def _enforce_init_timeout(self, now: float) -> None:
        """``initialization_timeout_s``: a replica of the current version still in ``__init__`` after it
        fails the deploy at once (a constructor that hangs once will hang again; waiting for three would
        keep the user waiting three times as long). Every starting replica of that version is killed; the
        old version, if any, keeps serving."""
        timeout = self.spec.config.initialization_timeout_s
        if timeout is None or self.failed_message is not None:
            return
        current = [r for r in self.replicas.values() if r.version == self.spec.version]
        took = {r.replica_id: t for r in current if (t := r.in_init_for(now)) is not None and t > timeout}
        if not took:
            return
        late = max(took, key=took.__getitem__)
        self.failed_message = (
            f"Replica {late} was still in __init__ after {format_duration(took[late])}, past "
            f"initialization_timeout_s={timeout:g}, and was killed. Make __init__ finish sooner or raise "
            "initialization_timeout_s, then deploy again."
        )
        for record in current:
            if record.state == ReplicaState.STARTING:
                self._discard(record)
        self._ctx.wake()

    def _discard(self, record: ReplicaRecord) -> None:
        """Forget a replica that never served and kill it (no drain: it has nothing to finish)."""
        self.replicas.pop(record.replica_id, None)
        record.begin_stop()
        record.actor.kill()

    def _watch(self, record: ReplicaRecord) -> None:
        self._spawn(record, self._death_watch(record))
        self._spawn(record, self._health_loop(record))

    async def _death_watch(self, record: ReplicaRecord) -> None:
        try:
            await record.actor.wait_for_death()
        except ActorCallFailed as exc:
            if record.state != ReplicaState.STOPPING:
                self._ctx.node_lost()
                self.fail(record, f"replica {record.replica_id} died: {exc.brief}")

    async def _health_loop(self, record: ReplicaRecord) -> None:
        while record.serving:
            config = self.spec.config
            await self._ctx.clock.sleep(config.health_check_period_s)
            if not record.serving:
                return
            try:
                await record.actor.check_health(config.health_check_timeout_s)
            except ActorCallFailed as exc:
                failures = record.on_health_failure()
                record.unanswered = exc.cause == "timed out"
                self._ctx.health(self.dep, record.replica_id, False)
                if failures >= HEALTH_FAILURES_BEFORE_REPLACE:
                    why = f"replica {record.replica_id} failed {failures} health checks in a row: {exc.cause}"
                    self.fail(record, why)
                    return
                continue
            record.on_health_ok()
            record.unanswered = False
            self._ctx.health(self.dep, record.replica_id, True)
            if self.unhealthy_message and self._recovered():
                self.unhealthy_message = None
                self._ctx.wake()

    def _stop_replica(self, record: ReplicaRecord) -> None:
        if record.state == ReplicaState.STOPPING:
            return
        self._ctx.health(self.dep, record.replica_id, False)
        was_started = record.info is not None
        record.begin_stop()
        self._spawn(record, self._graceful_stop(record, was_started))

    async def _graceful_stop(self, record: ReplicaRecord, was_started: bool) -> None:
        self._ctx.publish()  # routers drop it before it starts draining
        if was_started:
            await record.actor.prepare_for_shutdown(self.spec.config.graceful_shutdown_timeout_s)
        record.actor.kill()
        if self.replicas.get(record.replica_id) is record:
            del self.replicas[record.replica_id]
        self._ctx.wake()

    def _reconfigure_replica(self, record: ReplicaRecord) -> None:
        record.begin_reconfigure()
        config = self.spec.replica_config
        target_version = config.config_version

        async def run() -> None:
            try:
                error = await record.actor.reconfigure(config)
            except ActorCallFailed as exc:
                error = f"reconfigure failed: {exc.brief}"
            if record.state != ReplicaState.UPDATING:
                return
            record.on_reconfigured(target_version)
            if error:
                self.failed_message = f"reconfigure(user_config) raised:\n{error}"
            self._ctx.wake()

        self._spawn(record, run())
