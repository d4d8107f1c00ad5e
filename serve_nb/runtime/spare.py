"""Keep one idle Ray worker process ready on this node, so the next replica starts without waiting for one.

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
import threading
from typing import Any

import ray

logger = logging.getLogger(__name__)


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
        from ray.util.client import ray as client_ray

        if client_ray.is_connected():
            return False
        context = ray.get_runtime_context()
        if context.runtime_env:
            return False
        from ray._private.grpc_utils import init_grpc_channel
        from ray.core.generated import common_pb2, node_manager_pb2, node_manager_pb2_grpc

        node = next(n for n in ray.nodes() if n["NodeID"] == context.get_node_id())
        request = node_manager_pb2.PrestartWorkersRequest(
            language=common_pb2.PYTHON,
            job_id=ray.JobID.from_hex(context.get_job_id()).binary(),
            keep_alive_duration_secs=keep_alive_s,
            num_workers=1,
        )
        channel = init_grpc_channel(f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}")
        try:
            node_manager_pb2_grpc.NodeManagerServiceStub(channel).PrestartWorkers(request, timeout=5)
        finally:
            channel.close()
        return True
    except Exception:
        logger.debug("serve_nb: could not prestart a worker", exc_info=True)
        return False
