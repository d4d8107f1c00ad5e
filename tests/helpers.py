"""Test helpers: bounded waiting for a condition (never a bare sleep), scenarios in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


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
    """A Ray actor other processes can wait on; ``send`` releases every waiter (for gating replicas)."""
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

    return Signal.remote()


def ongoing_requests(app: str, deployment: str) -> list[int]:
    """In-flight request counts of a deployment's replicas, asked of the replica actors directly."""
    import ray

    names = [
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "serve_nb" and a["name"].startswith(f"SERVE_NB_REPLICA::{app}#{deployment}#")
    ]
    return [ray.get(ray.get_actor(n, namespace="serve_nb").get_num_ongoing_requests.remote()) for n in names]


def run_scenario(script: Path, timeout_s: float = 600.0) -> None:
    """Run a scenario that needs a Ray of its own in a child process; it must print "<stem> passed"."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=timeout_s, env=env)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    assert f"{script.stem.replace('_', ' ')} passed" in proc.stdout
