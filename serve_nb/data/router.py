"""The router in each caller's process: picks a replica, enforces per-replica and queue limits.

It runs on the process's background loop, learns replica sets from the long-poll, and never
asks the controller per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from typing import Any, AsyncIterator, Callable, Protocol

from serve_nb.config import DEFAULT_MAX_ONGOING_REQUESTS
from serve_nb.core.choice import Locality, choose_for_model, choose_replica, locality_from_env
from serve_nb.data.channel import Address, ChannelClient, ConnectionLost, ForObjectStore, NotSent, Rejected, auth
from serve_nb.data.channel.liveness import Vouch
from serve_nb.data.channel.shm import ShmArena
from serve_nb.data.objects import LargeCalls
from serve_nb.data.request import BodySource, Request, StashedResult
from serve_nb.exceptions import BackPressureError, DeploymentUnavailableError
from serve_nb.types import DeploymentID, ReplicaInfo, ReplicaSet

logger = logging.getLogger(__name__)

#: After a REJECT (replica full, or its in-flight count here is stale) skip that replica this long,
#: so a retry goes elsewhere instead of spinning on the same one.
REJECT_BACKOFF_S = 0.005
#: A lost or departing replica stays blocked "for good": the long-poll removes it (or the controller
#: brings back a new one under a new id) long before this passes.
BLOCKED_FOR_GOOD_S = 3600.0
#: How long a replica whose connection was lost is left alone before it is tried again, if the controller
#: kept it: several times its check of such a replica (2 s) plus the long-poll's delivery.
LOST_RECHECK_S = 10.0
#: A replica blocked for less than this still counts as reachable (``_reachable``).
REACHABLE_HORIZON_S = 1.0
#: A queued request wakes for a blocked replica's return only if that is sooner than this; blocks
#: longer than it (the for-good ones) wait for a replica set update instead.
UNBLOCK_HORIZON_S = 60.0
#: An idempotent request whose replica died mid-request is sent again at most this often: a request
#: that itself crashes replicas must not take down every replica of the deployment in turn.
MAX_IDEMPOTENT_RETRIES = 3
#: A replica this router just sent a model's request to counts as holding that model for this long: longer
#: than the replica takes to report it (its report period, then the long-poll), so that requests sent in
#: between follow the first instead of loading the model on every replica.
MODEL_HINT_TTL_S = 2.0


class ReplicaClient(Protocol):
    """What the router needs from a connection to one replica (a ChannelClient, or a test fake)."""

    lost: bool
    on_unusable: Callable[[Any], None] | None

    @property
    def usable(self) -> bool: ...

    async def call(self, request: Request) -> Any: ...

    def stream(self, request: Request, body: BodySource | None = None) -> AsyncIterator[Any]: ...

    def close(self) -> None: ...


Connect = Callable[[ReplicaInfo], ReplicaClient]


def channel_connector(
    local_node_id: str, tls: ssl.SSLContext | None = None, ray_token: Callable[[], bytes | None] = lambda: None,
    shm_arena: ShmArena | None = None, vouch_for: Callable[[str], Vouch] | None = None,
) -> Connect:
    """Connections over the channel, keyed by each replica's own secret (and Ray's auth token, from
    ``ray_token``, when the replica says its key uses it); a Unix socket when the replica is on this
    node, TLS (``tls``) over TCP. ``vouch_for(replica_id)``: how to ask whether a silent replica's process
    lives (``liveness``)."""

    def connect(info: ReplicaInfo) -> ReplicaClient:
        address = Address(info.host, info.port, info.uds_path, info.node_id)
        token = ray_token() if info.key_uses_ray_token else None
        if info.key_uses_ray_token and token is None:
            logger.warning(
                "serve_nb: replica %s authenticates callers with Ray's auth token, and this process has none "
                "(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token); its calls will be refused.",
                info.replica_id,
            )
        key = auth.channel_key(info.secret, token)
        return ChannelClient(address, key, tls=tls, local_node_id=local_node_id, shm_arena=shm_arena,
                             vouch=vouch_for(info.replica_id) if vouch_for is not None else None)

    return connect


class Router:
    """Routes one deployment's requests from this process."""

    def __init__(
        self,
        deployment: DeploymentID,
        connect: Connect,
        *,
        local_node_id: str = "",
        rng: random.Random | None = None,
        on_replica_unreachable: Callable[[str], None] | None = None,
        on_queue_change: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        large_calls: LargeCalls | None = None,
        count_request: Callable[[Request], None] | None = None,
        locality: Locality | None = None,
    ) -> None:
        self.deployment = deployment
        #: How much replicas on this node are favoured (``SERVE_NB_ROUTING_LOCALITY`` unless given).
        self.locality = locality if locality is not None else locality_from_env()
        self._count_request = count_request  # Ray Serve's serve_num_router_requests
        self._large_calls = large_calls
        self._clock = clock
        self._connect = connect
        self._local_node_id = local_node_id
        self._rng = rng or random.Random()
        self._on_unreachable = on_replica_unreachable
        self._on_queue_change = on_queue_change
        self._clients: dict[str, ReplicaClient] = {}
        # Connections to replicas gone from the set, kept until their in-flight requests end (or the
        # connection is lost: the heartbeat still fails them if the replica goes silent).
        self._retiring: dict[str, ReplicaClient] = {}
        self._infos: dict[str, ReplicaInfo] = {}
        self._in_flight: dict[str, int] = {}
        self._capacity: dict[str, int] = {}
        self._blocked_until: dict[str, float] = {}
        self._local: frozenset[str] = frozenset()
        self._models: dict[str, tuple[str, ...]] = {}  # multiplexed models per replica, from the long-poll
        self._model_hints: dict[tuple[str, str], float] = {}  # (replica, model) sent here lately -> until when
        self._max_ongoing = DEFAULT_MAX_ONGOING_REQUESTS
        self._max_queued = -1
        self._unavailable: str | None = None
        self._waiting = ""  # with no replica running: what the first one waits for, from the controller
        self._known = False
        self._waiters: list[asyncio.Future[None]] = []
        self.num_queued = 0

    # -- replica set updates (long-poll callback, on the loop) ---------------------------------

    def update(self, replica_set: ReplicaSet | None) -> None:
        if replica_set is None:
            replica_set = ReplicaSet(unavailable=f"Deployment '{self.deployment.name}' of application "
                                     f"'{self.deployment.app}' no longer exists.")
        self._known = True
        self._max_ongoing = replica_set.max_ongoing_requests
        self._max_queued = replica_set.max_queued_requests
        self._unavailable = replica_set.unavailable if not replica_set.replicas else None
        self._waiting = replica_set.waiting
        self._models = replica_set.models
        new = {r.replica_id: r for r in replica_set.replicas}
        for rid in list(self._infos):
            if rid not in new:
                self._infos.pop(rid)
                self._capacity.pop(rid, None)
                self._blocked_until.pop(rid, None)
                client = self._clients.pop(rid, None)
                if client is not None:
                    if self._in_flight.get(rid, 0) == 0:
                        client.close()
                    else:
                        self._retiring[rid] = client  # in-flight requests finish on the old connection
                if self._large_calls is not None:
                    self._large_calls.forget(self.deployment, rid)
        for rid, info in new.items():
            known = self._infos.get(rid)
            if known is None or known != info:
                old = self._clients.pop(rid, None)
                if old is not None:
                    old.close()
            self._infos[rid] = info
            self._capacity[rid] = self._max_ongoing
            self._in_flight.setdefault(rid, 0)
        self._local = frozenset(rid for rid, i in self._infos.items() if i.node_id == self._local_node_id)
        self._wake(all_waiters=True)

    # -- choosing and waiting -------------------------------------------------------------------

    def _client(self, rid: str) -> ReplicaClient:
        client = self._clients.get(rid)
        if client is None or not client.usable:
            client = self._connect(self._infos[rid])
            client.on_unusable = lambda c, rid=rid: self._mark_unusable(rid, c)
            self._clients[rid] = client
        return client

    def _mark_unusable(self, rid: str, client: ReplicaClient) -> None:
        if self._clients.get(rid) is client:
            self._clients.pop(rid, None)
            # Lost: send nothing more there until the controller has checked it; a replica it removes leaves
            # with the long-poll well within LOST_RECHECK_S, one it keeps (its process answered: user code
            # blocked its loop for a while) is connected to again after it. Goodbye: the replica is draining
            # and the long-poll will drop it.
            self._blocked_until[rid] = self._clock() + (LOST_RECHECK_S if client.lost else BLOCKED_FOR_GOOD_S)
            if client.lost and self._on_unreachable is not None:
                self._on_unreachable(rid)

    def _choose(self, now: float, model_id: str = "") -> str | None:
        candidates = [rid for rid in self._infos if self._blocked_until.get(rid, 0.0) <= now]
        if not model_id:
            return choose_replica(candidates, self._in_flight, self._capacity, self._rng, self._local, self.locality)
        rid = choose_for_model(candidates, self._in_flight, self._capacity, self._rng, self._models_seen(now),
                               model_id, self._local, self.locality)
        if rid is not None:
            self._model_hints[(rid, model_id)] = now + MODEL_HINT_TTL_S
        return rid

    def _models_seen(self, now: float) -> dict[str, frozenset[str]]:
        """Each replica's models: as the controller last published them, plus those sent there lately."""
        for key in [k for k, until in self._model_hints.items() if until <= now]:
            del self._model_hints[key]
        seen = {rid: set(models) for rid, models in self._models.items()}
        for rid, model in self._model_hints:
            seen.setdefault(rid, set()).add(model)
        return {rid: frozenset(models) for rid, models in seen.items()}

    def _wake(self, all_waiters: bool = False) -> None:
        while self._waiters:
            fut = self._waiters.pop(0)
            if not fut.done():
                fut.set_result(None)
                if not all_waiters:
                    return

    async def _wait_for_slot(self, now: float, limit: float | None = None) -> None:
        """Wait for a release, a replica set update, the end of the soonest block, or ``limit`` seconds.

        ``now`` must be the time ``_choose`` judged blocks by: read again here, a block that ended in
        between would count neither as a reason to wait for nor as free, and the wait would have no
        end (nothing in flight here to release a slot)."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        ends = [t - now for t in self._blocked_until.values() if now < t < now + UNBLOCK_HORIZON_S]
        if limit is not None:
            ends.append(limit)
        timeout = max(0.0, min(ends)) if ends else None
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            pass
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # Woken for a free slot, then cancelled (its client left) before taking it: hand the
                # wake-up on, or the next waiter sleeps while the slot stays free.
                self._wake()
            raise
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)

    async def _acquire(self, no_replica_timeout_s: float | None = None, model_id: str = "") -> str:
        """Wait until a replica has room; raise if the deployment is unavailable, the queue is full, or
        (with ``no_replica_timeout_s``) no replica has been running for that long while this waited."""
        queued = False
        no_replica_since: float | None = None
        try:
            while True:
                if self._unavailable is not None:
                    raise DeploymentUnavailableError(self._unavailable)
                now = self._clock()
                rid = self._choose(now, model_id) if self._known else None
                if rid is not None:
                    self._in_flight[rid] += 1
                    return rid
                limit = None
                if no_replica_timeout_s is not None and not self._reachable(now):
                    no_replica_since = now if no_replica_since is None else no_replica_since
                    limit = no_replica_since + no_replica_timeout_s - now
                    if limit <= 0:
                        raise DeploymentUnavailableError(self._no_replica_message(no_replica_timeout_s))
                else:
                    no_replica_since = None  # replicas exist (busy, or briefly blocked): wait as usual
                if not queued:
                    if self._max_queued != -1 and self.num_queued >= self._max_queued:
                        raise BackPressureError(self.deployment.name, self.num_queued, self._max_queued)
                    queued = True
                    self.num_queued += 1
                    if self._on_queue_change is not None:
                        self._on_queue_change(self.num_queued)
                await self._wait_for_slot(now, limit)
        finally:
            if queued:
                self.num_queued -= 1
                if self._on_queue_change is not None:
                    self._on_queue_change(self.num_queued)

    def _reachable(self, now: float) -> bool:
        """Some replica may take a request soon: one exists that is not blocked for longer than a moment (a
        full one backs off for milliseconds; a lost one until LOST_RECHECK_S, a departing one for good)."""
        return any(self._blocked_until.get(rid, 0.0) < now + REACHABLE_HORIZON_S for rid in self._infos)

    def _no_replica_message(self, waited_s: float) -> str:
        dep = self.deployment
        if self._infos:
            return (f"No replica of deployment '{dep.name}' of application '{dep.app}' could be reached from here "
                    f"(waited {waited_s:g} s); serve.status() shows whether they are running.")
        reason = f" {self._waiting}" if self._waiting else ""
        return (f"No replica of deployment '{dep.name}' of application '{dep.app}' is running yet (waited "
                f"{waited_s:g} s).{reason}")

    def _release(self, rid: str) -> None:
        if rid in self._in_flight:
            self._in_flight[rid] -= 1
            if rid not in self._infos and self._in_flight[rid] <= 0:
                self._in_flight.pop(rid, None)
                retired = self._retiring.pop(rid, None)
                if retired is not None:
                    retired.close()
        self._wake()

    def _rejected(self, rid: str) -> None:
        self._blocked_until[rid] = self._clock() + REJECT_BACKOFF_S

    # -- sending --------------------------------------------------------------------------------

    async def call(self, request: Request, *, retries: int = 0, no_replica_timeout_s: float | None = None) -> Any:
        """Send a one-value request. A REJECT or a request never sent is retried on another choice; a
        request whose replica died while it was in flight is sent again only ``retries`` times (callers
        pass retries only for idempotent requests: it may have run). Large arguments or replies go
        through Ray's object store rather than the channel (``serve_nb.data.objects``)."""
        if self._count_request is not None:
            self._count_request(request)
        while True:
            rid = await self._acquire(no_replica_timeout_s, request.model_id)
            try:
                try:
                    result = await self._client(rid).call(request)
                except ForObjectStore:
                    result = await self._large().call(self.deployment, rid, request)
                if type(result) is StashedResult:
                    result = await self._large().take(self.deployment, rid, result.token)
                return result
            except Rejected:
                self._rejected(rid)
            except NotSent:
                pass  # never ran: choose again
            except ConnectionLost:
                if retries <= 0:
                    raise
                retries -= 1
            finally:
                self._release(rid)

    async def stream(
        self, request: Request, body: BodySource | None = None, *, retries: int = 0,
        no_replica_timeout_s: float | None = None,
    ) -> AsyncIterator[Any]:
        """Send a streaming request; retried like ``call`` until its first item arrives, never after. With
        ``body`` (the rest of a large HTTP body, sent once the replica admits the request) it is never sent
        again once the body started to flow: the body is gone."""
        if self._count_request is not None:
            self._count_request(request)
        while True:
            rid = await self._acquire(no_replica_timeout_s, request.model_id)
            started = False
            try:
                async with contextlib.aclosing(self._client(rid).stream(request, body)) as items:  # closed with this generator
                    async for item in items:
                        started = True
                        yield item
                return
            except Rejected:
                self._rejected(rid)
            except NotSent:
                if started:
                    raise
            except ConnectionLost:
                if started or retries <= 0 or (body is not None and body.started):
                    raise
                retries -= 1
            finally:
                self._release(rid)

    def _large(self) -> LargeCalls:
        if self._large_calls is None:
            raise RuntimeError("this router was made without a way to send large calls (large_calls=...)")
        return self._large_calls

    def close(self) -> None:
        for client in [*self._clients.values(), *self._retiring.values()]:
            client.close()
        self._clients.clear()
        self._retiring.clear()
        self._unavailable = "Serve was shut down."
        self._wake(all_waiters=True)
