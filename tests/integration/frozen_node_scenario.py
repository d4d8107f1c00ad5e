"""A node frozen under load (its raylet and workers stopped with SIGSTOP: sockets open, nothing answers):
requests in flight on its replica and those sent until it is noticed fail within the channel's heartbeat
timeout (idempotent ones are sent again to another replica) instead of hanging, and the rest are served.
Run by test_load_spread_and_frozen_nodes.py in its own process; prints the figures it measured.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import node_processes, scenario_main, signal_processes, stop_local_cluster  # noqa: E402

PORT = 8330
#: Each call takes this long in the replica, so several are in flight on every replica at any time.
WORK_S = 0.2
CALLERS_PER_HANDLE = 6
FROZEN_AT_S = 4.0
RUN_S = 22.0
#: A request that had not ended by then hung: detection takes the heartbeat timeout plus one beat (≤ 5 s).
HUNG_S = 12.0


@dataclass
class Outcome:
    started: float
    ended: float
    error: str  # "" when it succeeded


def hosts_controller(procs: list[psutil.Process]) -> bool:
    for proc in procs:
        try:
            if "ServeController" in " ".join(proc.cmdline()) or "ServeController" in proc.name():
                return True
        except psutil.Error:
            pass
    return False


async def load(handle, until: float, outcomes: list[Outcome]) -> None:
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            await asyncio.wait_for(handle.remote(WORK_S), HUNG_S * 2)
            error = ""
        except asyncio.TimeoutError:
            error = "hung"
        except Exception as exc:  # noqa: BLE001 - every failure is counted, by type
            error = type(exc).__name__
        outcomes.append(Outcome(started, time.monotonic(), error))


def main() -> None:
    import ray
    from ray.cluster_utils import Cluster

    import serve_nb as serve

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    workers = [cluster.add_node(num_cpus=2), cluster.add_node(num_cpus=2)]
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    cluster.wait_for_nodes()
    frozen: list[psutil.Process] = []
    try:
        serve.start(http_options={"port": PORT, "reuse_port": True})

        @serve.deployment(num_replicas=3, max_replicas_per_node=1, max_ongoing_requests=50,
                          ray_actor_options={"num_cpus": 0})
        class Work:
            async def __call__(self, seconds: float) -> str:
                await asyncio.sleep(seconds)
                return ray.get_runtime_context().get_node_id()

        plain = serve.run(Work.bind(), name="frozen", route_prefix=None)
        idempotent = plain.options(idempotent=True)
        replicas = serve.feed.get(serve.feed.app("frozen")).deployments[0].replicas
        assert len({r.node_id for r in replicas}) == 3, f"one replica per node expected: {replicas}"
        victim = next(w for w in workers
                      if not hosts_controller(node_processes(w)))
        victim_id = victim.node_id

        async def run() -> tuple[list[Outcome], list[Outcome], float]:
            start = time.monotonic()
            until = start + RUN_S
            plain_out: list[Outcome] = []
            idem_out: list[Outcome] = []
            callers = [load(plain, until, plain_out) for _ in range(CALLERS_PER_HANDLE)]
            callers += [load(idempotent, until, idem_out) for _ in range(CALLERS_PER_HANDLE)]
            tasks = [asyncio.ensure_future(c) for c in callers]
            await asyncio.sleep(FROZEN_AT_S)  # steady load on all three nodes first
            frozen.extend(node_processes(victim))
            signal_processes(frozen, signal.SIGSTOP)
            frozen_at = time.monotonic()
            await asyncio.gather(*tasks)
            return plain_out, idem_out, frozen_at

        plain_out, idem_out, frozen_at = asyncio.run(run())
        everything = plain_out + idem_out
        longest = max(o.ended - o.started for o in everything)
        hung = [o for o in everything if o.error == "hung"]
        assert not hung and longest < HUNG_S, f"requests hung: {len(hung)}, longest {longest:.1f} s"
        plain_failed = [o for o in plain_out if o.error]
        idem_failed = [o for o in idem_out if o.error]
        assert {o.error for o in plain_failed} <= {"ConnectionLost"}, {o.error for o in plain_failed}
        assert idem_failed == [], f"idempotent calls failed: {[o.error for o in idem_failed]}"
        disturbed = [o for o in everything if o.ended > frozen_at and (o.error or o.ended - o.started > 1.0)]
        recovered_s = max((o.ended for o in disturbed), default=frozen_at) - frozen_at
        late = [o for o in everything if o.started > frozen_at + recovered_s]
        assert late and all(not o.error for o in late)
        served_after = sum(1 for o in everything if o.started > frozen_at and not o.error)
        states = serve.status().applications["frozen"].deployments["Work"].replica_states
        print(f"frozen node: {len(plain_failed)} of {len(plain_out)} plain calls failed (ConnectionLost), "
              f"{len(idem_failed)} of {len(idem_out)} idempotent calls failed; slowest call {longest:.1f} s; "
              f"recovered {recovered_s:.1f} s after the freeze; {served_after} calls served after it; "
              f"replica states now {states}; frozen node {victim_id[:8]}")
    finally:
        signal_processes(frozen, signal.SIGCONT)
        stop_local_cluster(cluster)


if __name__ == "__main__":
    scenario_main(main, "frozen node")
