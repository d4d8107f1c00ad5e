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
    """The idle workers, once there are some and the set stays the same for two seconds."""
    before = idle_workers()
    time.sleep(2.0)
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


os.environ["SERVE_NB_SPARE_WORKER"] = "1"  # whatever the parent's setting, this is what is under test
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
raylet_pid = next(pid for pid, parent, program in processes() if parent == os.getpid() and program.endswith("/raylet"))
# Like serve_nb: the driver makes a detached actor (the controller) before asking for the extra worker.
creator = Creator.options(lifetime="detached").remote()
ray.get(creator.pid.remote())
baseline = wait_for(stable_idle_workers, "the idle workers Ray started with the driver")
assert spare.prestart_worker(), "the raylet refused the prestart request"
new = wait_for(lambda: idle_workers() - baseline, "the prestarted worker to be idle")
# The controller's own detached actors (the replicas) then use up every idle worker, the new one included.
# (Should a slow worker from Ray's own start-up be counted as new too, it must be used all the same.)
pids = ray.get(creator.create.remote(len(baseline) + len(new)))
assert new <= set(pids), f"idle workers {sorted(new - set(pids))} were not used by the new actors: {pids}"
print("prestart scenario passed")
