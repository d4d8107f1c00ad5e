"""A 3-node cluster on one machine (ray.cluster_utils.Cluster) with default proxy settings, through a frozen
node (its raylet and workers SIGSTOP'd), a frozen controller and a cleanly removed node; run by
test_node_faults.py in its own process. Prints requests failed and seconds to recover for each fault.

``NODE_FAULTS_DEFAULT_HEALTH=1`` keeps the deployment's default health checks (10 s period) to measure what
a user gets out of the box; the test uses 1 s checks so it stays short. Exits non-zero, with the failed check
printed, if anything is off.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import node_processes, scenario_main, signal_processes, stop_local_cluster, wait_until  # noqa: E402

PORT = 8320
DEFAULT_HEALTH = os.environ.get("NODE_FAULTS_DEFAULT_HEALTH") == "1"


class Load:
    """Sequential calls through a handle from a background thread; records (time, ok) for each."""

    def __init__(self, handle: Any, timeout_s: float = 2.0) -> None:
        self._handle, self._timeout_s = handle, timeout_s
        self.results: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._handle.remote().result(timeout_s=self._timeout_s)
                ok = True
            except Exception:
                ok = False
            self.results.append((time.monotonic(), ok))
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._timeout_s + 5)

    def since(self, start: float) -> tuple[int, float]:
        """Failed calls after ``start``, and seconds from ``start`` until the last failure ended (0: none)."""
        after = [(t, ok) for t, ok in self.results if t >= start]
        failed = [t for t, ok in after if not ok]
        return len(failed), (max(failed) - start if failed else 0.0)


def main() -> None:
    import ray
    from ray.cluster_utils import Cluster

    import serve_nb as serve
    from serve_nb.common.names import CONTROLLER_NAME, NAMESPACE
    from serve_nb.exceptions import ControllerUnreachableError

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    frozen_node = cluster.add_node(num_cpus=2, resources={"w": 1})
    removed_node = cluster.add_node(num_cpus=2, resources={"w": 1})
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    cluster.wait_for_nodes()
    frozen: list[psutil.Process] = []
    try:
        # Item 5: three nodes on one machine share the port by default (no reuse_port given).
        serve.start(http_options={"host": "0.0.0.0", "port": PORT})
        status = serve.status()
        assert [str(p) for p in status.proxies.values()] == ["HEALTHY"] * 3, status.proxy_details
        # Item 4: a wildcard host is reported at each node's address.
        addresses = {d.address for d in status.proxy_details.values()}
        assert all(not a.startswith("0.0.0.0") for a in addresses), addresses

        # Item 2: the controller runs on the head node.
        head_id = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and "node:__internal_head__" in n["Resources"])
        controller = ray.get_actor(CONTROLLER_NAME, namespace=NAMESPACE)
        where = ray.get(controller.__ray_call__.remote(lambda self: (ray.get_runtime_context().get_node_id(),
                                                                      os.getpid())))
        assert where[0] == head_id, f"controller on {where[0]}, head is {head_id}"

        # ... and serve.status() and the widgets say so within seconds when the controller does not answer.
        from serve_nb.data.client import get_client
        from serve_nb.notebook.widgets import Dashboard

        dashboard = Dashboard()
        wait_until(lambda: get_client().controller_watch.reachable is True, timeout_s=10,
                   what="the widget's first answer from the controller")
        assert dashboard.connection == ""
        controller_process = psutil.Process(where[1])
        controller_process.suspend()
        try:
            asked = time.monotonic()
            try:
                serve.status()
                raise AssertionError("serve.status() answered with its controller stopped")
            except ControllerUnreachableError as exc:
                took = time.monotonic() - asked
                assert took < 8, f"serve.status() took {took:.1f} s to say {exc}"
                assert "controller unreachable, retrying" in str(exc)
            wait_until(lambda: dashboard.connection == ControllerUnreachableError.STATE, timeout_s=8,
                       what="the dashboard to say the controller is unreachable")
            took = time.monotonic() - asked
            assert took < 8, f"the dashboard took {took:.1f} s to say the controller is unreachable"
        finally:
            controller_process.resume()
        wait_until(lambda: serve.status() is not None, timeout_s=20, what="the controller to answer again")
        wait_until(lambda: dashboard.connection == "", timeout_s=10, what="the dashboard to hear the controller again")
        dashboard.close()

        health = {} if DEFAULT_HEALTH else {"health_check_period_s": 1.0, "health_check_timeout_s": 1.0}

        @serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0, "resources": {"w": 0.5}}, **health)
        class OnWorkers:
            def __call__(self) -> str:
                return ray.get_runtime_context().get_node_id()

        handle = serve.run(OnWorkers.bind(), name="faults", route_prefix=None)

        def replica_nodes(state: str = "RUNNING") -> list[str]:
            detail = serve.feed.get(serve.feed.app("faults"))
            return [r.node_id for r in detail.deployments[0].replicas if r.state == state]

        wait_until(lambda: sorted(replica_nodes()) == sorted([frozen_node.node_id, removed_node.node_id]),
                   timeout_s=30, what="one replica on each worker")
        load = Load(handle)
        wait_until(lambda: len(load.results) > 20, timeout_s=20, what="calls to flow")

        # Item 1 (controller side): a frozen node's proxy is UNHEALTHY within seconds; its replica is replaced
        # on the node that answers.
        frozen = node_processes(frozen_node)
        froze_at = time.monotonic()
        signal_processes(frozen, signal.SIGSTOP)
        wait_until(lambda: str(serve.status().proxies.get(frozen_node.node_id)) == "UNHEALTHY", timeout_s=10,
                   what="the frozen node's proxy to be UNHEALTHY")
        proxy_unhealthy_s = time.monotonic() - froze_at
        wait_until(lambda: replica_nodes() == [removed_node.node_id] * 2, timeout_s=120,
                   what="the frozen node's replica replaced on the node that answers", interval_s=0.2)
        replaced_s = time.monotonic() - froze_at
        wait_until(lambda: load.since(froze_at)[1] < time.monotonic() - froze_at - 3, timeout_s=60,
                   what="calls to succeed again for 3 s", interval_s=0.2)
        frozen_failed, frozen_recovered_s = load.since(froze_at)
        signal_processes(frozen, signal.SIGCONT)
        cluster.remove_node(frozen_node, allow_graceful=False)
        frozen = []
        wait_until(lambda: frozen_node.node_id not in serve.status().proxies, timeout_s=60,
                   what="the frozen node's proxy to go with its node")

        # Item 6: a clean node loss is reported as replacement, and no proxy restarts on the node gone.
        wait_until(lambda: str(serve.status().applications["faults"].status) == "RUNNING", timeout_s=30,
                   what="the app RUNNING again")
        cluster.add_node(num_cpus=2, resources={"w": 1})  # room for the replacements (started before the clock)
        removed_at = time.monotonic()
        messages: set[str] = set()

        def recovered() -> bool:
            info = serve.status().applications["faults"].deployments["OnWorkers"]
            messages.add(info.message)
            return info.replica_states == {"RUNNING": 2} and removed_node.node_id not in serve.status().proxies

        cluster.remove_node(removed_node)
        wait_until(recovered, timeout_s=60, what="replicas replaced after a clean node removal", interval_s=0.1)
        removed_replaced_s = time.monotonic() - removed_at
        wait_until(lambda: load.since(removed_at)[1] < time.monotonic() - removed_at - 2, timeout_s=30,
                   what="calls to succeed again for 2 s", interval_s=0.2)
        removed_failed, removed_recovered_s = load.since(removed_at)
        load.stop()
        assert not any("new version" in m for m in messages), messages
        assert not any(n == removed_node.node_id for n in serve.status().proxies)

        print(f"health checks: {'defaults' if DEFAULT_HEALTH else '1 s'}")
        print(f"frozen node: proxy UNHEALTHY after {proxy_unhealthy_s:.1f} s, replica replaced after "
              f"{replaced_s:.1f} s, {frozen_failed} calls failed, calls recovered after {frozen_recovered_s:.1f} s")
        print(f"clean removal: replaced after {removed_replaced_s:.1f} s, {removed_failed} calls failed, "
              f"calls recovered after {removed_recovered_s:.1f} s; statuses seen: {sorted(messages)}")
    finally:
        signal_processes(frozen, signal.SIGCONT)
        stop_local_cluster(cluster)


if __name__ == "__main__":
    scenario_main(main, "node faults")
