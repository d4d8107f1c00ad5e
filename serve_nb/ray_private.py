"""Every use of a private Ray API, in one place.

Ray's public API has no call for these; each is wrapped so that on another Ray version it fails
softly (returns a neutral value, or raises a clear error) and so that a Ray upgrade is checked here
and nowhere else. Ray 2.60 is the version these were written against.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

import ray

logger = logging.getLogger(__name__)


# -- the GCS key-value store (the controller's checkpoint) -----------------------------------------


def kv_get(key: bytes, namespace: str) -> bytes | None:
    from ray.experimental import internal_kv

    return internal_kv._internal_kv_get(key, namespace=namespace)


def kv_put(key: bytes, value: bytes, namespace: str) -> None:
    from ray.experimental import internal_kv

    internal_kv._internal_kv_put(key, value, overwrite=True, namespace=namespace)


def kv_delete(key: bytes, namespace: str) -> None:
    from ray.experimental import internal_kv

    internal_kv._internal_kv_del(key, namespace=namespace)


# -- connecting ----------------------------------------------------------------------------------


def recorded_cluster_address() -> str | None:
    """The address Ray would join without being told one: RAY_ADDRESS, or the record `ray start` leaves."""
    try:
        from ray._private.services import get_ray_address_from_environment

        return get_ray_address_from_environment(None, None) or None
    except Exception:
        return None


def enable_local_auth_token() -> None:
    """Send this machine's Ray auth token when connecting, if there is one (Ray 2.60 `ray start`
    clusters require token auth, and a driver only sends it when told to)."""
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


def ray_auth_token(only_if_enabled: bool) -> bytes | None:
    """Ray's auth token as this process has it (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token),
    or None. With ``only_if_enabled``, None unless this process runs Ray with token authentication
    (RAY_AUTH_MODE=token): how a replica decides whether its channel key mixes the token in. A caller
    told that it does reads the token whatever its own mode says."""
    try:
        from ray._raylet import AuthenticationMode, AuthenticationTokenLoader, get_authentication_mode

        if only_if_enabled and get_authentication_mode() != AuthenticationMode.TOKEN:
            return None
        token = AuthenticationTokenLoader.instance().get_raw_token(ignore_auth_mode=True)
    except Exception:  # another Ray version, or no token to be found
        return None
    return token.encode() if token else None


def connection_id() -> int:
    """Identifies this process's Ray connection; it changes after ray.shutdown() and a new ray.init()."""
    worker = ray._private.worker.global_worker
    return id(getattr(worker, "core_worker", None)) if worker.connected else 0


# -- worker processes ------------------------------------------------------------------------------


def prestart_python_worker(node: dict[str, Any], job_id_hex: str, keep_alive_s: int) -> None:
    """Ask the raylet of ``node`` (an entry of ``ray.nodes()``) to start one idle Python worker for
    the job now, kept for ``keep_alive_s`` even if idle. Raises if this Ray lacks the call."""
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import common_pb2, node_manager_pb2, node_manager_pb2_grpc

    request = node_manager_pb2.PrestartWorkersRequest(
        language=common_pb2.PYTHON,
        job_id=ray.JobID.from_hex(job_id_hex).binary(),
        keep_alive_duration_secs=keep_alive_s,
        num_workers=1,
    )
    channel = init_grpc_channel(f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}")
    try:
        node_manager_pb2_grpc.NodeManagerServiceStub(channel).PrestartWorkers(request, timeout=5)
    finally:
        channel.close()


def ray_client_connected() -> bool:
    """True when this process reaches Ray through Ray Client (a ``ray://`` address)."""
    try:
        from ray.util.client import ray as client_ray

        return bool(client_ray.is_connected())
    except Exception:
        return False


# -- node events ------------------------------------------------------------------------------------

#: After the GCS subscription broke (a GCS restart), try again this long after.
NODE_EVENTS_RETRY_S = 1.0


async def watch_node_deaths(on_dead: Callable[[str], None]) -> None:
    """Call ``on_dead(node_id_hex)`` as soon as Ray's GCS publishes that a node died, for as long as the task
    runs. Ray's public API only answers ``ray.nodes()`` when asked; this subscribes to the GCS's node channel,
    as Ray's own dashboard does. Returns (saying why at debug level) if this Ray has no such channel."""
    try:
        from ray._private.gcs_pubsub import GcsAioNodeInfoSubscriber
        from ray.core.generated import gcs_pb2

        dead = gcs_pb2.GcsNodeInfo.GcsNodeState.DEAD
        subscriber = GcsAioNodeInfoSubscriber(address=ray.get_runtime_context().gcs_address)
        await subscriber.subscribe()
    except Exception as exc:  # another Ray version, or a Ray client connection
        logger.debug("serve_nb: no node events from Ray (%s); the node list is polled instead", exc)
        return
    try:
        while True:
            try:
                events = await subscriber.poll(batch_size=100)
            except Exception as exc:  # GCS unavailable for a moment: keep listening
                logger.debug("serve_nb: node events interrupted (%s)", exc)
                events = []
            for _, info in events:
                if info.state == dead:
                    on_dead(info.node_id.hex())
            if not events:  # the poll ended without news (a timeout, or the GCS restarting): not a busy loop
                await asyncio.sleep(NODE_EVENTS_RETRY_S)
    finally:
        await subscriber.close()


# -- the session --------------------------------------------------------------------------------


def session_dir() -> str | None:
    """This node's Ray session directory (``/tmp/ray/session_...``), or None when unknown."""
    try:
        node = ray._private.worker._global_node
        return node.get_session_dir_path() if node is not None else None
    except Exception:  # another Ray version: callers fall back to the temp dir
        return None


def dashboard_address() -> str | None:
    """The Ray dashboard's ``host:port`` when this process is connected to a Ray that runs one, else None."""
    try:
        if not ray.is_initialized():
            return None
        node = ray._private.worker._global_node
        url = node.webui_url if node is not None else None
    except Exception:  # another Ray version, or a Ray client connection: no link then
        return None
    return url or None


# -- the object store ------------------------------------------------------------------------------


def object_store_usage() -> tuple[int, int] | None:
    """(MiB used, objects) in the object store over every node, as Ray's memory summary reports them;
    None if this Ray prints something else. For checks that large calls free what they put there."""
    import re

    from ray._private.internal_api import memory_summary

    found = re.search(r"Plasma memory usage (\d+) MiB, (\d+) objects", memory_summary(stats_only=True))
    return (int(found.group(1)), int(found.group(2))) if found else None

