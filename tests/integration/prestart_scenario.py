"""Child process of test_spare_worker.py: needs a fresh Ray whose idle workers it can count."""

from __future__ import annotations

import os
import time
from pathlib import Path

import ray

from serve_nb.runtime import spare


def processes() -> list[tuple[int, int, str]]:
    """(pid, parent pid, program) of every process, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                program = (entry / "cmdline").read_bytes().split(b"\0")[0].decode()
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            found.append((int(entry.name), parent, program))
    return found


def idle_workers() -> set[int]:
    """Pids of this Ray's idle worker processes: children of its raylet titled ``ray::IDLE``."""
    return {pid for pid, parent, program in processes() if parent == raylet_pid and program == "ray::IDLE"}


def stable_idle_workers() -> set[int]:
    """The idle workers, once there are some and the set stays the same for a second."""
    before = idle_workers()
    time.sleep(1.0)
    return before if before and idle_workers() == before else set()


def wait_for(predicate, what: str, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@ray.remote(num_cpus=0)
class Creator:
    """Stands in for the controller: a detached actor that creates detached actors (the replicas)."""

    def create(self, count: int) -> list[int]:
        actors = [Pid.options(lifetime="detached").remote() for _ in range(count)]
        return ray.get([a.pid.remote() for a in actors])

    def pid(self) -> int:
        return os.getpid()


@ray.remote(num_cpus=0)
class Pid:
    def pid(self) -> int:
        return os.getpid()


ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
raylet_pid = next(pid for pid, parent, program in processes() if parent == os.getpid() and program.endswith("/raylet"))
baseline = wait_for(stable_idle_workers, "the workers Ray starts with the driver")
assert spare.prestart_worker(), "the raylet refused the prestart request"
new = wait_for(lambda: idle_workers() - baseline, "the prestarted worker to be idle")
assert len(new) == 1, f"expected one new idle worker, got {sorted(new)}"
(prestarted,) = new
# Like serve_nb: a detached actor made by the driver, then detached actors made by it, one per idle worker.
creator = Creator.options(lifetime="detached").remote()
creator_pid = ray.get(creator.pid.remote())
pids = ray.get(creator.create.remote(len(baseline)))
assert prestarted in pids + [creator_pid], f"the prestarted worker {prestarted} was not used: {pids}, {creator_pid}"
print("prestart scenario passed")
