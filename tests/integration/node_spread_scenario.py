"""Calls from the driver (on the head node) spread over replicas on all three nodes, sequentially and under
concurrent load, as do HTTP requests through the head node's proxy; with SERVE_NB_ROUTING_LOCALITY=local a
router keeps its calls on its own node. Run by test_load_spread_and_frozen_nodes.py in its own process.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import scenario_main, stop_local_cluster, wait_until  # noqa: E402

PORT = 8340
SEQUENTIAL = 90
CONCURRENT = 240
AT_ONCE = 8


def main() -> None:
    import ray
    from ray.cluster_utils import Cluster

    import serve_nb as serve

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2)
    cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    cluster.wait_for_nodes()
    try:
        serve.start(http_options={"port": PORT, "reuse_port": True})

        @serve.deployment(num_replicas=3, max_replicas_per_node=1, ray_actor_options={"num_cpus": 0})
        class Where:
            async def __call__(self, request=None) -> str:
                await asyncio.sleep(0.02)
                return ray.get_runtime_context().get_node_id()

        handle = serve.run(Where.bind(), name="where", route_prefix="/where")
        here = ray.get_runtime_context().get_node_id()
        nodes = {r.node_id for r in serve.feed.get(serve.feed.app("where")).deployments[0].replicas}
        assert len(nodes) == 3 and here in nodes, nodes

        # The driver's router learns the replica set from the long-poll: count only once it routes to all three.
        wait_until(lambda: {r.result(timeout_s=30) for r in [handle.remote() for _ in range(AT_ONCE)]} == nodes,
                   timeout_s=60, what="the driver's router reaching the replicas on every node")
        sequential = Counter(handle.remote().result(timeout_s=30) for _ in range(SEQUENTIAL))
        concurrent: Counter[str] = Counter()
        for _ in range(CONCURRENT // AT_ONCE):
            concurrent.update(r.result(timeout_s=30) for r in [handle.remote() for _ in range(AT_ONCE)])
        with ThreadPoolExecutor(AT_ONCE) as pool:
            http = Counter(pool.map(lambda _: requests.get(f"http://127.0.0.1:{PORT}/where", timeout=30).text,
                                    range(CONCURRENT)))
        # Sequential calls find every replica idle: the local one wins when it is one of the two drawn
        # (2 pairs of 3), so each other node expects 1/6 of them. Under load the replicas share evenly.
        for what, counts, total, least, most_local in (
            ("sequential", sequential, SEQUENTIAL, 0.04, 0.85), ("concurrent", concurrent, CONCURRENT, 0.15, 0.6),
            ("http", http, CONCURRENT, 0.15, 0.6),
        ):
            assert set(counts) == nodes, f"{what} calls did not reach every node: {counts}"
            assert all(counts[n] >= total * least for n in nodes), f"{what} calls barely reached a node: {counts}"
            assert counts[here] <= total * most_local, f"{what} calls mostly stayed local: {counts}"

        os.environ["SERVE_NB_ROUTING_LOCALITY"] = "local"  # read when this process's router for it is made
        local_handle = serve.run(Where.options(name="WhereLocal").bind(), name="where-local", route_prefix=None)
        wait_until(lambda: sum(r.state == "RUNNING" for r in
                               serve.feed.get(serve.feed.app("where-local")).deployments[0].replicas) == 3,
                   timeout_s=60, what="the three replicas of WhereLocal running")
        local: Counter[str] = Counter()
        for _ in range(8):  # 4 at a time: within the local replica's room (max_ongoing_requests, 5)
            local.update(r.result(timeout_s=30) for r in [local_handle.remote() for _ in range(4)])
        # All but the odd call the local replica refused (its slot freed a moment after its reply) stay here.
        assert local[here] >= 0.85 * sum(local.values()), f"SERVE_NB_ROUTING_LOCALITY=local left the node: {local}"

        def share(counts: Counter[str]) -> str:
            return f"{counts[here]}/{sum(counts.values())} local over {len(counts)} nodes"

        print(f"ok: sequential {share(sequential)}, 8 at a time {share(concurrent)}, http 8 at a time {share(http)}, "
              f"locality=local {share(local)}")
    finally:
        stop_local_cluster(cluster)


if __name__ == "__main__":
    scenario_main(main, "node spread")
