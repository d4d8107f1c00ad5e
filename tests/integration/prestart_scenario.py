"""Child process of test_spare_worker.py: needs a fresh Ray whose idle workers it can count."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import ray

from serve_nb import bootstrap as spare

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import wait_until  # noqa: E402


def processes() -> list[tuple[int, int, list[str]]]:
    """(pid, parent pid, command line) of every process, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = [a.decode() for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            found.append((int(entry.name), parent, args))
    return found


def settled_idle_workers() -> set[int]:
    """Pids of this Ray's idle workers (raylet children titled ``ray::IDLE``), once none is still booting
    (a booting worker runs ``default_worker.py`` until it renames itself); empty while one is."""
    children = [(pid, args) for pid, parent, args in processes() if parent == raylet_pid and args]
    if any(arg.endswith("default_worker.py") for _, args in children for arg in args):
        return set()
    return {pid for pid, args in children if args[0] == "ray::IDLE"}


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
raylet_pid = next(
    pid for pid, parent, args in processes() if parent == os.getpid() and args and args[0].endswith("/raylet")
)
# Like serve_nb: the driver makes a detached actor (the controller) before asking for the extra worker.
creator = Creator.options(lifetime="detached").remote()
ray.get(creator.pid.remote())
baseline = wait_until(settled_idle_workers, 60, 0.1, what="the idle workers Ray started with the driver")
assert spare.prestart_worker(), "the raylet refused the prestart request"
new = wait_until(lambda: settled_idle_workers() - baseline, 60, 0.1, what="the prestarted worker to be idle")
assert len(new) == 1, f"expected one new idle worker, got {sorted(new)}"
(prestarted,) = new
# The controller's own detached actors (the replicas) then use up every idle worker, the new one included.
pids = ray.get(creator.create.remote(len(baseline) + 1))
assert prestarted in pids, f"the prestarted worker {prestarted} was not used by the new actors: {pids}"
print("prestart scenario passed")
