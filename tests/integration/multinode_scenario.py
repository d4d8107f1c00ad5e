"""Several nodes on one machine (ray.cluster_utils.Cluster); run by test_multinode.py in its own process.

Exits non-zero, with the failed check printed, if anything is off.
"""

from __future__ import annotations

import sys
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import scenario_main, stop_local_cluster, wait_until  # noqa: E402

PORT = 8310


def main() -> None:
    import ray
    from ray.cluster_utils import Cluster

    import serve_nb as serve

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"head": 1}})
    second = cluster.add_node(num_cpus=2, resources={"second": 1})
    cluster.add_node(num_cpus=2, resources={"third": 1})
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    cluster.wait_for_nodes()
    try:
        serve.start(http_options={"port": PORT})  # three nodes on one machine share the port by default
        proxies = serve.status().proxies
        assert len(proxies) == 3 and all(p == "HEALTHY" for p in proxies.values()), proxies

        @serve.deployment(num_replicas=3, ray_actor_options={"num_cpus": 1})
        class Spread:
            def __call__(self, request=None):
                return ray.get_runtime_context().get_node_id()

        @serve.deployment(ray_actor_options={"num_cpus": 0, "resources": {"third": 0.5}})
        class Pinned:
            def __call__(self, request=None):
                return ray.get_runtime_context().get_node_id()

        @serve.deployment(num_replicas=3, max_replicas_per_node=1, ray_actor_options={"num_cpus": 0})
        class OnePerNode:
            def __call__(self, request=None):
                return ray.get_runtime_context().get_node_id()

        @serve.deployment(ray_actor_options={"num_cpus": 0, "resources": {"third": 0.5}})
        class FarArrays:
            def __call__(self, arr):
                return arr * 2  # a large reply, back across nodes

        serve.run(Spread.bind(), name="spread", route_prefix="/spread")
        serve.run(Pinned.bind(), name="pinned", route_prefix="/pinned")
        serve.run(OnePerNode.bind(), name="one-per-node", route_prefix=None)
        one_per_node = serve.feed.get(serve.feed.app("one-per-node")).deployments[0].replicas
        assert len({r.node_id for r in one_per_node}) == 3, f"max_replicas_per_node=1 not held: {one_per_node}"
        serve.delete("one-per-node")
        import numpy as np

        far = serve.run(FarArrays.bind(), name="far-arrays", route_prefix=None)
        arr = np.arange(1_000_000, dtype=np.float32)  # 4 MB: through the object store, from node to node
        assert np.array_equal(far.remote(arr).result(timeout_s=60), arr * 2), "a large array across nodes"
        serve.delete("far-arrays")
        third_id = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and "third" in n["Resources"])
        second_id = second.node_id

        def spread_nodes() -> set[str]:
            detail = serve.feed.get(serve.feed.app("spread"))
            return {r.node_id for r in detail.deployments[0].replicas if r.state == "RUNNING"}

        nodes = spread_nodes()
        assert len(nodes) >= 2, f"replicas not spread over nodes: {nodes}"
        assert requests.get(f"http://127.0.0.1:{PORT}/pinned").text == third_id, "custom resource not honoured"
        assert all(requests.get(f"http://127.0.0.1:{PORT}/spread").status_code == 200 for _ in range(20))

        had_second = second_id in nodes
        cluster.remove_node(second)
        wait_until(lambda: second_id not in serve.status().proxies, timeout_s=60, what="the lost node's proxy to go")
        wait_until(lambda: len(spread_nodes()) > 0 and second_id not in spread_nodes()
                   and serve.status().applications["spread"].deployments["Spread"].replica_states == {"RUNNING": 3},
                   timeout_s=60, what="replicas rescheduled off the lost node")
        failures = [r.status_code for r in (requests.get(f"http://127.0.0.1:{PORT}/spread") for _ in range(50))
                    if r.status_code != 200]
        assert failures == [], failures
        print(f"ok: proxies {len(serve.status().proxies)}, spread over {len(nodes)} nodes "
              f"(lost node held replicas: {had_second}), pinned on the 'third' node")
    finally:
        stop_local_cluster(cluster)


if __name__ == "__main__":
    scenario_main(main, "multinode")
