"""Which Ray cluster a ``serve_nb`` command talks to, and the record that lets a second terminal find the
local Ray a ``serve_nb run`` started.

Order: ``--address``, then ``RAY_ADDRESS``, then a live cluster on this machine (one from ``ray start``, or
the one a running ``serve_nb run`` started), else (``run`` only) a new local Ray. A record whose process or
cluster is gone is ignored, never joined: joining a dead cluster hangs for minutes.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from serve_nb.bootstrap import gcs_answers, live_local_cluster
from serve_nb.data.channel.sockdir import pid_alive

#: Written by ``serve_nb run`` when it started its own local Ray; removed when it stops.
RUN_RECORD = Path(tempfile.gettempdir()) / "serve_nb" / "run_cluster.json"


class NoCluster(RuntimeError):
    """No Ray cluster to talk to; the message says how to get one."""


def recorded_run_cluster(record: Path = RUN_RECORD) -> str | None:
    """The local Ray of a ``serve_nb run`` that is still running, if any."""
    try:
        data = json.loads(record.read_text())
        address, pid = str(data["address"]), int(data["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return address if pid_alive(pid) and gcs_answers(address) else None


def record_run_cluster(address: str, record: Path = RUN_RECORD) -> None:
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"address": address, "pid": os.getpid()}))


def clear_run_cluster(record: Path = RUN_RECORD) -> None:
    """Remove the record if it is this process's."""
    try:
        if json.loads(record.read_text()).get("pid") == os.getpid():
            record.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def find_cluster(explicit: str | None) -> str | None:
    """The address to join, or None if there is no cluster to join (see the module's order)."""
    if explicit:
        return explicit
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    return live_local_cluster() or recorded_run_cluster()


def connect(explicit: str | None, *, may_start: bool) -> bool:
    """Join the cluster (or, if ``may_start``, start a local Ray and record it); True if this process started it."""
    from serve_nb import bootstrap

    address = find_cluster(explicit)
    if address is None and not may_start:
        raise NoCluster(
            "No running Ray cluster found: start one with `serve_nb run CONFIG` (or `ray start --head`), or pass "
            "--address / set RAY_ADDRESS."
        )
    bootstrap.ensure_ray(address)
    if address is None:
        import ray

        record_run_cluster(ray.get_runtime_context().gcs_address)
        return True
    return False
