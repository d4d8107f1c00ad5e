"""Failed requests while an application changes under load: closed-loop clients through a code update, a
scale-down, another app's delete, a controller kill and a replica kill.

    python bench/chaos.py                  # 8 HTTP clients, then 8 handle clients, 3 repetitions
    python bench/chaos.py --reps 1 --clients 4

Each repetition runs in a fresh Ray. The replica kill is measured twice: with plain requests (a request in
flight on the killed replica may have run, so it fails) and with requests declared safe to repeat
(``retry_safe_methods`` for HTTP GET, ``handle.options(idempotent=True)``). Prints one line per phase: requests
answered during it, and failures with their kinds.
"""

from __future__ import annotations

import argparse
import collections
import threading
import time
from typing import Any, Callable

SOURCE = """
import serve_nb as serve
@serve.deployment(num_replicas={n}, ray_actor_options={{"num_cpus": 0.1}})
class Steady:
    async def __call__(self, request=None):
        return "{answer}"
"""
PHASES = ("update", "scale 3->1", "other-app delete", "controller kill", "replica kill", "replica kill (retry)")
SETTLE_S = 1.0  # load kept on after each change has settled, so late failures are counted too


def _define(answer: str, n: int) -> Any:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(SOURCE.format(answer=answer, n=n), namespace)
    return namespace["Steady"]


class HTTPFailure(Exception):
    """A reply other than 200 (counted by its status code)."""


class Load:
    """``clients`` closed loops calling ``send`` (True: answered); failures are kept by phase."""

    def __init__(self, clients: int, send: Callable[[], None]) -> None:
        self.phase = "warm-up"
        self.ok: collections.Counter[str] = collections.Counter()
        self.failed: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(send,), daemon=True) for _ in range(clients)]

    def _loop(self, send: Callable[[], None]) -> None:
        while not self._stop.is_set():
            phase = self.phase
            try:
                send()
                self.ok[phase] += 1
            except HTTPFailure as exc:
                self.failed[phase][str(exc)] += 1
            except Exception as exc:  # noqa: BLE001 - counting failures is the point
                self.failed[phase][type(exc).__name__] += 1

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)


def _until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the change did not settle")
        time.sleep(0.05)


def _running(app: str, replicas: int | None = None) -> bool:
    import serve_nb as serve

    info = serve.status().applications.get(app)
    if info is None or info.status != "RUNNING":
        return False
    return replicas is None or info.deployments["Steady"].replica_states == {"RUNNING": replicas}


def one_run(mode: str, clients: int) -> dict[str, tuple[int, dict[str, int]]]:
    import ray
    import requests

    import serve_nb as serve
    from serve_nb.common.names import CONTROLLER_NAME, NAMESPACE

    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        serve.start(http_options={"retry_safe_methods": True})
        handle = serve.run(_define("v1", 3).bind(), name="steady", route_prefix="/steady")

        @serve.deployment(ray_actor_options={"num_cpus": 0.1})
        def other() -> str:
            return "other"

        serve.run(other.bind(), name="other", route_prefix="/other")
        sessions = threading.local()
        retry = {"on": False}  # from the second replica kill on, requests are declared safe to repeat

        def send() -> None:
            if mode == "http":
                if not hasattr(sessions, "s"):
                    sessions.s = requests.Session()
                method = sessions.s.get if retry["on"] else sessions.s.post
                reply = method("http://127.0.0.1:8000/steady", timeout=60)
                if reply.status_code != 200:
                    raise HTTPFailure(f"HTTP {reply.status_code}")
            else:
                h = handle.options(idempotent=True) if retry["on"] else handle
                h.remote().result(timeout_s=60)

        with Load(clients, send) as load:
            time.sleep(SETTLE_S)
            load.phase = "update"
            serve.run(_define("v2", 3).bind(), name="steady", route_prefix="/steady")
            time.sleep(SETTLE_S)
            load.phase = "scale 3->1"
            serve.run(_define("v2", 1).bind(), name="steady", route_prefix="/steady")
            _until(lambda: _running("steady", 1))
            time.sleep(SETTLE_S)
            load.phase = "other-app delete"
            serve.delete("other")
            time.sleep(SETTLE_S)
            load.phase = "controller kill"
            ray.kill(ray.get_actor(CONTROLLER_NAME, namespace=NAMESPACE), no_restart=False)
            _until(lambda: _running("steady", 1))
            time.sleep(SETTLE_S)
            serve.run(_define("v2", 2).bind(), name="steady", route_prefix="/steady")
            _until(lambda: _running("steady", 2))
            for phase in ("replica kill", "replica kill (retry)"):
                retry["on"] = phase.endswith("(retry)")
                load.phase = phase
                victim = _kill_one_replica("steady")
                _until(lambda: victim not in _replica_names("steady") and _running("steady", 2))
                time.sleep(SETTLE_S)
            load.phase = "done"
        return {p: (load.ok[p], dict(load.failed.get(p, {}))) for p in PHASES}
    finally:
        serve.shutdown()
        ray.shutdown()


def _replica_names(app: str) -> list[str]:
    import ray

    from serve_nb.common.names import NAMESPACE, REPLICA_PREFIX

    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["namespace"] == NAMESPACE and a["name"].startswith(f"{REPLICA_PREFIX}{app}#"))


def _kill_one_replica(app: str) -> str:
    import ray

    from serve_nb.common.names import NAMESPACE

    victim = _replica_names(app)[0]
    ray.kill(ray.get_actor(victim, namespace=NAMESPACE), no_restart=True)
    return victim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--modes", default="http,handle")
    args = parser.parse_args()
    for mode in args.modes.split(","):
        for rep in range(args.reps):
            result = one_run(mode, args.clients)
            for phase, (ok, failed) in result.items():
                kinds = ", ".join(f"{k} x{v}" for k, v in sorted(failed.items())) or "-"
                print(f"{mode:6} rep {rep + 1}  {phase:22} answered {ok:6}  failed {sum(failed.values()):3}  {kinds}",
                      flush=True)


if __name__ == "__main__":
    main()
