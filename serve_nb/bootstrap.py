"""Connecting this process to Ray and to serve_nb's controller, and keeping Ray worker processes ready.

Ray bootstrap: join the cluster named by RAY_ADDRESS or a live `ray start` cluster on this machine,
else start an embedded local Ray sized for a few replicas. Controller: look it up by name, or create
it (detached, restartable, on the head node). The data plane (``serve_nb.data.client``) only ever
looks the controller up; creating it is the caller's job, here.

Spare workers: keep one idle Ray worker process ready on this node, so the next replica starts without
waiting for one.

Every replica needs a worker process of its own. Ray starts a couple of idle workers when a driver
connects and then starts one per actor, on demand: a fresh Python process importing Ray, about a second
on a small machine, which would dominate every code update and scale-up after the first deploy. So once
``serve.run`` has finished, the caller sends a no-op, zero-CPU task: if an idle worker exists it runs
there in a millisecond and nothing changes; if not, Ray starts a worker for it, which afterwards waits
idle in Ray's pool for the next replica (a notebook cell re-run, a scale-up).

It is sent from the caller (the driver), not from the controller: Ray 2.60 binds a worker that ran a
task submitted by a detached actor to that actor, and never reuses it for a new detached actor such as a
replica.

The very first replica has the same problem earlier: the idle workers Ray starts with the driver are
taken by the controller and the proxy. So when this caller creates the controller, it also asks its
node's raylet to start one more worker for this job at once (``prestart_worker``); it boots while the
controller and proxy do, and the first replica finds it ready.

``SERVE_NB_SPARE_WORKER=0`` turns both off (one idle process less; slower replica starts).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

import ray

from serve_nb import ray_private
from serve_nb.common.names import CONTROLLER_NAME, NAMESPACE
from serve_nb.config import HTTPOptions
from serve_nb.core.cluster_nodes import head_node_id
from serve_nb.core.log_format import LoggingConfig
from serve_nb.data import client as data_client
from serve_nb.data.client import ServeClient

logger = logging.getLogger(__name__)

EMBEDDED_MIN_CPUS = 8


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
        address = live_local_cluster()
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


def live_local_cluster() -> str | None:
    """The address of a cluster started here with `ray start`, if its GCS answers.

    Ray records the last such cluster in a file and would try to join it even after it died
    (hanging for minutes); a one-second connection check tells the live one from a stale record.
    """
    candidate = ray_private.recorded_cluster_address()
    return candidate if candidate and gcs_answers(candidate) else None


def gcs_answers(address: str) -> bool:
    """Whether something accepts connections at ``host:port`` within a second (a recorded cluster may be dead)."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1.0).close()
    except (OSError, ValueError):
        return False
    return True


def _use_local_auth_token() -> None:
    """Clusters started with ``ray start`` (Ray 2.60) require token auth, but a driver that connects
    to one sends no token unless RAY_AUTH_MODE=token. Use the local token if there is one."""
    if os.environ.get("RAY_AUTH_MODE") is None:
        ray_private.enable_local_auth_token()


def _head_node_strategy() -> Any:
    """Pin the controller to the head node, hard: losing a worker node must not take the controller
    (and with it ``serve.status()`` and every deploy) away for the minute Ray needs to restart it.
    The head is found through ``ray.nodes()`` (works over ``ray://`` and on a remote ``ray start``
    cluster). Losing the head loses the whole Ray cluster with its GCS unless GCS fault tolerance is on;
    then Ray restarts the controller on the head once it is back (see the README's multi-node section)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    try:
        head = head_node_id(ray.nodes())
    except Exception:  # the GCS did not answer: let Ray place it rather than fail the start
        logger.warning("serve_nb: could not find the head node; the controller goes where Ray puts it")
        return None
    return NodeAffinitySchedulingStrategy(head, soft=False) if head is not None else None


def get_controller(create: bool, http_options: HTTPOptions | None = None,
                   logging_config: LoggingConfig | None = None) -> Any | None:
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
    from serve_nb.control.controller import ServeController

    return ray.remote(ServeController).options(**options).remote(http_options, logging_config)


_lock = threading.Lock()


def connect_client(create: bool = False, http_options: HTTPOptions | None = None, timeout_s: float = 60.0,
                   logging_config: LoggingConfig | None = None) -> ServeClient | None:
    """This process's client; with ``create`` connects to Ray and starts the controller if needed (with
    ``http_options`` and the proxies' ``logging_config``; a running controller keeps its own)."""
    client = data_client.get_client()
    if client is not None or not create:
        return client
    with _lock:
        client = data_client.get_client()
        if client is not None:
            return client
        ensure_ray(os.environ.get("RAY_ADDRESS") or None)
        controller = get_controller(create=True, http_options=http_options, logging_config=logging_config)
        info = ray.get(controller.ready.remote(), timeout=timeout_s)
        return data_client.install_client(controller, info)


# -- spare workers ---------------------------------------------------------------------------------


def enabled() -> bool:
    return os.environ.get("SERVE_NB_SPARE_WORKER", "1").strip().lower() not in ("0", "false", "no", "off")


@ray.remote(num_cpus=0, max_retries=0)
def _occupy_spare() -> int:
    """Runs on the spare (an idle worker, or one Ray starts for it)."""
    return os.getpid()


def keep_spare_worker() -> Any | None:
    """Send the no-op task (fire and forget); returns its ObjectRef, or None when turned off or impossible."""
    if not enabled():
        return None
    try:
        return _occupy_spare.remote()
    except Exception:  # Ray is shutting down, or a client connection dropped: nothing to keep warm
        return None


def keep_spare_worker_soon() -> None:
    """``keep_spare_worker`` off the caller's thread: its first call exports the task to Ray (~0.1 s)."""
    if enabled():
        threading.Thread(target=keep_spare_worker, name="serve_nb-spare", daemon=True).start()


PRESTART_KEEP_ALIVE_S = 30


def prestart_worker(keep_alive_s: int = PRESTART_KEEP_ALIVE_S) -> bool:
    """Ask the raylet of this driver's node to start one idle Python worker for this job now.

    The raylet keeps it for ``keep_alive_s`` even if idle, then treats it like any idle worker. Best
    effort: returns False (and does nothing) when turned off, over Ray Client (no local raylet), when the
    job has a runtime_env (the worker could not match its actors), or if this Ray lacks the call.
    """
    if not enabled():
        return False
    try:
        if ray_private.ray_client_connected():
            return False
        context = ray.get_runtime_context()
        if context.runtime_env:
            return False
        node = next(n for n in ray.nodes() if n["NodeID"] == context.get_node_id())
        ray_private.prestart_python_worker(node, context.get_job_id(), keep_alive_s)
        return True
    except Exception:
        logger.debug("serve_nb: could not prestart a worker", exc_info=True)
        return False
