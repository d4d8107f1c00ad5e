"""Test helpers: bounded waiting for a condition (never a bare sleep), source defined as a notebook cell
would define it, what the public feed says about replicas, the Serve log files, scenarios in a child process."""

from __future__ import annotations

import contextlib
import glob
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T")

HTTP_PORT = 8000  # the proxy's default port, as a user of serve.start() gets it
URL = f"http://127.0.0.1:{HTTP_PORT}"


def wait_until(condition: Callable[[], T], timeout_s: float = 20.0, interval_s: float = 0.02, what: str = "") -> T:
    """Return the first truthy value of ``condition()``; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except AssertionError as exc:
            last_exc = exc
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what or condition}") from last_exc


def make_signal():
    """A Ray actor other processes can wait on; ``send`` releases every waiter (for gating replicas).

    ``wait`` blocks until ``send``; ``is_set`` tells without blocking (for ``wait_until`` in the test)."""
    import asyncio

    import ray

    @ray.remote(num_cpus=0)
    class Signal:
        def __init__(self):
            self.event = asyncio.Event()

        async def wait(self):
            await self.event.wait()

        def send(self):
            self.event.set()

        def is_set(self) -> bool:
            return self.event.is_set()

    return Signal.remote()


def define(source: str, name: str, **fields: Any) -> Any:
    """Run ``source`` (formatted with ``fields``) as a notebook cell runs it, in a fresh ``__main__``
    namespace, and return what it defines as ``name``: each call is a re-run of the cell, a new object."""
    namespace: dict = {"__name__": "__main__"}
    exec(compile(source.format(**fields), "<cell>", "exec"), namespace)
    return namespace[name]


def deployment_detail(app: str, deployment: str):
    """The public feed's view of one deployment (a ``DeploymentDetail``), as the widgets show it."""
    import serve_nb as serve

    detail = serve.feed.get(serve.feed.app(app))
    return next(d for d in detail.deployments if d.name == deployment)


def ongoing_requests(app: str, deployment: str) -> list[int]:
    """In-flight request counts of a deployment's running replicas, as the public feed reports them."""
    return [r.ongoing for r in deployment_detail(app, deployment).replicas if r.state == "RUNNING"]


def run_scenario(script: Path, timeout_s: float = 600.0) -> None:
    """Run a scenario that needs a Ray of its own in a child process; it must print "<stem> passed"."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=timeout_s, env=env)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    assert f"{script.stem.replace('_', ' ')} passed" in proc.stdout


def serve_logs(pattern: str) -> str:
    """The text of the Ray session's Serve log files matching ``pattern`` (``proxy_*.log``, ``replica_<app>_*``)."""
    from serve_nb import ray_private

    found = sorted(glob.glob(os.path.join(ray_private.session_dir(), "logs", "serve", pattern)))
    return "".join(Path(f).read_text() for f in found)


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    """A local port another program is listening on, for as long as the block runs."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        yield blocker.getsockname()[1]


# -- scenarios on a local multi-node cluster (ray.cluster_utils.Cluster), each in a child process -----------


def node_processes(node: Any) -> list[Any]:
    """A ``Cluster`` node's raylet and everything it started (its workers, hence its replicas and proxy)."""
    import psutil

    raylet = next(p for kind, p in node.live_processes() if kind == "raylet")
    root = psutil.Process(raylet.pid)
    return [root, *root.children(recursive=True)]


def signal_processes(processes: list[Any], sig: int) -> None:
    """Send ``sig`` to each process still there (SIGSTOP freezes a node, SIGCONT thaws it)."""
    import psutil

    for process in processes:
        try:
            process.send_signal(sig)
        except psutil.Error:
            pass


def stop_local_cluster(cluster: Any) -> None:
    """A scenario's tear-down: serve_nb, this driver's Ray connection, then the cluster's processes, each even if
    the one before failed (no node may outlive its test)."""
    import ray

    import serve_nb as serve

    try:
        serve.shutdown()
    finally:
        try:
            ray.shutdown()
        finally:
            cluster.shutdown()


def scenario_main(main: Callable[[], None], name: str) -> None:
    """A scenario script's entry point: run it and say how long it took (``run_scenario`` shows the output)."""
    started = time.monotonic()
    main()
    print(f"{name} scenario passed in {time.monotonic() - started:.1f}s")
