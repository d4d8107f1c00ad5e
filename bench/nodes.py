"""The ``nodes`` workload group: handle throughput with three replicas spread over 1, 2 and 3 nodes of a
3-node ``ray.cluster_utils.Cluster`` on this machine, and how much of the load the driver's own node takes.

It needs a Ray cluster of its own, so it runs after the other groups, once their local Ray is shut down.
All nodes share this machine's cores: the figures show what routing across nodes costs (TCP rather than a
Unix socket, the spread of calls), not the capacity more machines would add.
"""

from __future__ import annotations

import importlib
import math
import time
from collections import Counter
from typing import Any

NODE_COUNTS = (1, 2, 3)
REPLICAS = 3
#: Node i carries ``upto{k}`` for every k > i: a replica asking for ``upto{k}`` lands on the first k nodes.
RESOURCE = "bench_upto{}"

WHERE = '''
import ray

@serve.deployment(max_ongoing_requests=100, ray_actor_options={"num_cpus": 0})
class Where:
    async def __call__(self, request=None):
        return ray.get_runtime_context().get_node_id()
'''


def _node_resources(index: int) -> dict[str, float]:
    return {RESOURCE.format(k): 100.0 for k in NODE_COUNTS if k > index}


def node_spread(system: str, quick: bool, port: int) -> dict[str, Any]:
    """Figures ``nodes_{k}_rps_100`` (100 calls in flight) and ``nodes_{k}_local_pct_8`` (share of calls
    the driver's node served with 8 in flight, the load the locality issue was measured with)."""
    import ray
    from ray.cluster_utils import Cluster

    from workloads import define

    serve = importlib.import_module("serve_nb" if system == "serve_nb" else "ray.serve")
    seconds = 1.0 if quick else 3.0
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": _node_resources(0)})
    for index in (1, 2):
        cluster.add_node(num_cpus=2, resources=_node_resources(index))
    results: dict[str, Any] = {}
    try:
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
        cluster.wait_for_nodes()
        # serve_nb's proxies on several nodes of one host share the port with SO_REUSEPORT; Ray Serve's always do.
        http = {"port": port, "reuse_port": True} if system == "serve_nb" else {"port": port}
        serve.start(http_options=http)
        here = ray.get_runtime_context().get_node_id()
        for k in NODE_COUNTS:
            where = define(serve, WHERE)["Where"].options(
                num_replicas=REPLICAS, max_replicas_per_node=math.ceil(REPLICAS / k),
                ray_actor_options={"num_cpus": 0, "resources": {RESOURCE.format(k): 1}},
            )
            handle = serve.run(where.bind(), name=f"nodes{k}", route_prefix=None)
            for _ in range(50):
                handle.remote().result()
            served: Counter[str] = Counter()
            for _ in range(40):
                served.update(r.result() for r in [handle.remote() for _ in range(8)])
            results[f"nodes_{k}_local_pct_8"] = 100.0 * served[here] / sum(served.values())
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                for response in [handle.remote() for _ in range(100)]:
                    response.result()
                done += 100
            results[f"nodes_{k}_rps_100"] = done / (time.perf_counter() - start)
            serve.delete(f"nodes{k}")
        serve.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()
    return results
