"""The caller's side of serve_nb in one process: Ray connection, controller handle, long-poll, routers."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from typing import Any, AsyncIterator

import ray

from serve_nb.config import HTTPOptions
from serve_nb.core.snapshots import replicas_key
from serve_nb.runtime.controller import CONTROLLER_NAME, NAMESPACE, ServeController
from serve_nb.runtime.loop import BackgroundLoop, get_loop
from serve_nb.runtime.longpoll import LongPollClient
from serve_nb.runtime.messages import ClusterInfo
from serve_nb.runtime.router import Router
from serve_nb.runtime.spare import prestart_worker
from serve_nb.types import DeploymentID

logger = logging.getLogger(__name__)

EMBEDDED_MIN_CPUS = 8
_lock = threading.RLock()
_client: "ServeClient | None" = None


def ensure_ray(address: str | None = None, **init_kwargs: Any) -> None:
    """Connect to Ray if this process is not yet connected: RAY_ADDRESS / ``address``, else a local Ray."""
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {
        "log_to_driver": False,  # replica output goes to Ray's log files, not into notebook cells
        "logging_level": logging.ERROR,  # set-up chatter (auth token notices) stays out of cells
        "include_dashboard": False,
    }
    if address is None:
        address = _live_local_cluster()
        if address is None:
            # The embedded local Ray: replicas reserve one CPU each by default (as in Ray Serve), so
            # advertise at least 8 logical CPUs, or a 2-core laptop could not hold the seed examples'
            # three replicas. Mostly-idle replica processes share the real cores fine.
            kwargs["num_cpus"] = max(EMBEDDED_MIN_CPUS, os.cpu_count() or 1)
            kwargs["address"] = "local"
    kwargs.update(init_kwargs)
    if address is not None:
        kwargs["address"] = address
        _use_local_auth_token()
    _init_with_retries(ray.init, kwargs)
    # After start-up, Ray's own warnings (e.g. about resources) are worth seeing again.
    logging.getLogger("ray").setLevel(logging.WARNING)


CLIENT_SERVER_ATTEMPTS = 3


def is_transient_client_failure(exc: BaseException) -> bool:
    """Ray Client's proxy occasionally fails to spawn the per-connection server process: the forked
    child dies in gRPC's fork handling (``Check failed: next_worker->state == KICKED``) and the proxy
    reports it either as a failed start or as a zombie it cannot inspect. The next connection gets a
    fresh process and works."""
    if not isinstance(exc, ConnectionAbortedError):
        return False
    text = str(exc)
    if "_create_runtime_env" in text:  # the job's runtime_env could not be built: retrying will not help
        return False
    return "Starting Ray client server failed" in text or (
        "in start_specific_server" in text and ("ZombieProcess" in text or "NoSuchProcess" in text)
    )


def _init_with_retries(init: Any, kwargs: dict[str, Any], attempts: int = CLIENT_SERVER_ATTEMPTS,
                       pause_s: float = 0.5) -> None:
    """``ray.init(**kwargs)``, tried again (bounded) only when a ``ray://`` connection hits the
    transient server-spawn failure above; every other error is raised at once."""
    for attempt in range(1, attempts + 1):
        try:
            init(**kwargs)
            return
        except Exception as exc:
            if attempt == attempts or not is_transient_client_failure(exc):
                raise
            logger.info("Ray Client server failed to start (attempt %d of %d); retrying", attempt, attempts)
            time.sleep(pause_s)


def _live_local_cluster() -> str | None:
    """The address of a cluster started here with `ray start`, if its GCS answers.

    Ray records the last such cluster in a file and would try to join it even after it died
    (hanging for minutes); a one-second connection check tells the live one from a stale record.
    """
    try:
        from ray._private.services import get_ray_address_from_environment

        candidate = get_ray_address_from_environment(None, None)
    except Exception:
        return None
    if not candidate:
        return None
    host, _, port = candidate.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1.0).close()
    except (OSError, ValueError):
        return None
    return candidate


def _use_local_auth_token() -> None:
    """Clusters started with ``ray start`` (Ray 2.60) require token auth, but a driver that connects
    to one sends no token unless RAY_AUTH_MODE=token. Use the local token if there is one."""
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return
    try:
        from ray._private.authentication import authentication_token_setup as auth

        log = logging.getLogger(auth.__name__)
        level = log.level
        log.setLevel(logging.ERROR)
        try:
            auth.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
        finally:
            log.setLevel(level)
    except Exception:  # another Ray version: connect as Ray would
        pass


def _head_node_strategy() -> Any:
    try:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        for node in ray.nodes():
            if node.get("Alive") and "node:__internal_head__" in node.get("Resources", {}):
                return NodeAffinitySchedulingStrategy(node["NodeID"], soft=True)
    except Exception:
        pass
    return None


def get_controller(create: bool, http_options: HTTPOptions | None = None) -> Any | None:
    try:
        return ray.get_actor(CONTROLLER_NAME, namespace=NAMESPACE)
    except ValueError:
        if not create:
            return None
    options: dict[str, Any] = {
        "name": CONTROLLER_NAME,
        "namespace": NAMESPACE,
        "lifetime": "detached",
        "max_restarts": -1,
        "max_task_retries": -1,
        "num_cpus": 0,
        "max_concurrency": 10_000,
        "get_if_exists": True,
    }
    strategy = _head_node_strategy()
    if strategy is not None:
        options["scheduling_strategy"] = strategy
    prestart_worker()  # boots alongside the controller and proxy; the first replica then finds it idle
    return ray.remote(ServeController).options(**options).remote(http_options)


class ServeClient:
    """One per process. All routers and the long-poll live on the process's background loop."""

    def __init__(self, controller: Any, info: ClusterInfo) -> None:
        self.controller = controller
        self.info = info
        self.bg: BackgroundLoop = get_loop()
        self.longpoll = LongPollClient(self.bg.loop, lambda: self.controller)
        self.node_id = ray.get_runtime_context().get_node_id()
        self._routers: dict[DeploymentID, Router] = {}
        self.ray_session = _ray_session()
        self._queued_sent: dict[DeploymentID, int] = {}
        self._queued_latest: dict[DeploymentID, int] = {}
        self._flush_scheduled: set[DeploymentID] = set()
        self.caller_id = f"{os.getpid()}-{id(self):x}"
        self.closed = False

    def router(self, dep: DeploymentID) -> Router:
        """The router for ``dep`` (call on the background loop)."""
        router = self._routers.get(dep)
        if router is None:
            router = Router(
                dep, self.info.token, local_node_id=self.node_id,
                on_replica_unreachable=lambda rid, dep=dep: self._report_unreachable(dep, rid),
                on_queue_change=lambda n, dep=dep: self._queue_changed(dep, n),
            )
            self._routers[dep] = router
            self.longpoll.subscribe(replicas_key(dep.app, dep.name), router.update)
        return router

    def _queue_changed(self, dep: DeploymentID, queued: int) -> None:
        """Tell the controller how many requests wait here: at once when a queue forms (cold start
        from zero replicas), otherwise at most every 0.25 s."""
        self._queued_latest[dep] = queued
        if self._queued_sent.get(dep, 0) == 0 and queued > 0:
            self._send_queued(dep)
        elif dep not in self._flush_scheduled:
            self._flush_scheduled.add(dep)
            self.bg.loop.call_later(0.25, self._send_queued, dep)

    def _send_queued(self, dep: DeploymentID) -> None:
        self._flush_scheduled.discard(dep)
        queued = self._queued_latest.get(dep, 0)
        if self._queued_sent.get(dep) == queued:
            return
        self._queued_sent[dep] = queued
        try:
            self.controller.record_queued.remote(dep.app, dep.name, self.caller_id, queued)
        except Exception:
            pass

    def _report_unreachable(self, dep: DeploymentID, replica_id: str) -> None:
        try:
            self.controller.report_unreachable.remote(dep.app, dep.name, replica_id)
        except Exception:
            pass

    async def call(self, dep: DeploymentID, method: str, args: tuple, kwargs: dict, meta: dict) -> Any:
        if args or kwargs:
            args, kwargs = await _resolve_responses(args, kwargs)
        return await self.router(dep).call(method, args, kwargs, meta)

    async def stream(self, dep: DeploymentID, method: str, args: tuple, kwargs: dict, meta: dict) -> AsyncIterator[Any]:
        if args or kwargs:
            args, kwargs = await _resolve_responses(args, kwargs)
        async for item in self.router(dep).stream(method, args, kwargs, meta):
            yield item

    def close(self) -> None:
        self.closed = True
        self.longpoll.close()

        def _close_routers() -> None:
            for router in self._routers.values():
                router.close()
            self._routers.clear()

        self.bg.call_soon(_close_routers)


async def _resolve_responses(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Top-level DeploymentResponse arguments become their values (the caller never blocks on them)."""
    from serve_nb.runtime.handle import DeploymentResponse

    if not any(isinstance(a, DeploymentResponse) for a in args) and not any(
        isinstance(v, DeploymentResponse) for v in kwargs.values()
    ):
        return args, kwargs
    args = tuple([await a if isinstance(a, DeploymentResponse) else a for a in args])
    kwargs = {k: (await v if isinstance(v, DeploymentResponse) else v) for k, v in kwargs.items()}
    return args, kwargs


def _ray_session() -> int:
    """Identifies this process's Ray connection; it changes after ray.shutdown() and a new ray.init()."""
    worker = ray._private.worker.global_worker
    return id(getattr(worker, "core_worker", None)) if worker.connected else 0


def get_client(create: bool = False, http_options: HTTPOptions | None = None, timeout_s: float = 60.0) -> ServeClient | None:
    """This process's client; connects (and with ``create`` starts the controller) on first use."""
    global _client
    client = _client
    if client is not None and not client.closed and client.ray_session == _ray_session():
        return client
    with _lock:
        if _client is not None and not _client.closed:
            if _client.ray_session == _ray_session():
                return _client
            _client.close()  # Ray was shut down (and maybe re-initialized) under us
            _client = None
        if create:
            ensure_ray(os.environ.get("RAY_ADDRESS") or None)
        elif not ray.is_initialized():
            return None
        controller = get_controller(create, http_options)
        if controller is None:
            return None
        info = ray.get(controller.ready.remote(), timeout=timeout_s)
        _client = ServeClient(controller, info)
        return _client


def install_client(controller: Any, info: ClusterInfo) -> ServeClient:
    """Set this process's client from what the controller handed over (replicas, proxies): no lookups."""
    global _client
    with _lock:
        if _client is None or _client.closed:
            _client = ServeClient(controller, info)
        return _client


def current_client() -> ServeClient | None:
    return _client if _client is not None and not _client.closed else None


def forget_client() -> None:
    global _client
    with _lock:
        if _client is not None:
            _client.close()
        _client = None


def run_sync(coro: Any, timeout_s: float | None = None) -> Any:
    """Run a coroutine on the background loop from synchronous code (works inside notebook cells)."""
    return get_loop().run(coro, timeout_s)


def in_any_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False
