"""``max_replicas_per_node``: new replicas go only to nodes holding fewer than the limit, spread; when no
node has room the status says why, and an update makes room one old replica at a time (fakes, no Ray)."""

from __future__ import annotations

import collections

from fake_cluster import HEAD, WORKER, FakeCluster, Harness, run, spec, until

from serve_nb.core.resources import NodeInfo, node_with_room


def per_node(cluster: FakeCluster, version: str | None = None) -> dict[str, int]:
    live = [r for r in cluster.live() if version is None or r.version == version]
    return dict(collections.Counter(r.info.node_id for r in live))


def test_the_node_with_fewest_replicas_and_room_is_chosen():
    a, b, small = NodeInfo("a", {"CPU": 4}), NodeInfo("b", {"CPU": 4}), NodeInfo("s", {"CPU": 0.5})
    assert node_with_room([a, b], {}, 2, {"CPU": 1}) == "a"
    assert node_with_room([a, b], {"a": 1}, 2, {"CPU": 1}) == "b"
    assert node_with_room([a, b], {"a": 2, "b": 2}, 2, {"CPU": 1}) is None
    assert node_with_room([small], {}, 2, {"CPU": 1}) is None, "a node too small for one replica has no room"


def test_replicas_spread_under_the_limit_and_the_status_says_why_the_rest_wait():
    async def scenario():
        h = Harness(FakeCluster(nodes=[HEAD, WORKER]))
        core = await h.start()
        await core.deploy_app("app", "/app", "Model", [spec(num_replicas=3, max_replicas_per_node=1)])
        await until(lambda: len(h.cluster.live()) == 2, "two replicas placed")
        await h.tick(1)
        assert per_node(h.cluster) == {"head": 1, "worker": 1}
        info = (await h.status()).deployments["Model"]
        assert "max_replicas_per_node=1 and 2 node(s) that can hold a replica allow 2 replica(s); 3 wanted" in info.message
        assert info.waiting_for_resources
        h.cluster.nodes.append(NodeInfo("third", {"CPU": 4}))
        await h.tick(1)
        await h.wait_status("RUNNING")
        assert per_node(h.cluster) == {"head": 1, "worker": 1, "third": 1}

    run(scenario())


def test_an_update_with_no_room_to_surge_replaces_one_replica_at_a_time():
    async def scenario():
        h = Harness(FakeCluster(nodes=[HEAD, WORKER]))
        core = await h.start()
        await core.deploy_app("app", "/app", "Model", [spec(version="v1", num_replicas=2, max_replicas_per_node=1)])
        await h.wait_status("RUNNING")
        old = h.cluster.live()
        await core.deploy_app("app", "/app", "Model", [spec(version="v2", num_replicas=2, max_replicas_per_node=1)])
        await until(lambda: sum(r.killed for r in old) == 1, "one old replica to make room")
        assert sum(not r.killed for r in old) == 1, "the other keeps serving meanwhile"
        await h.wait_status("RUNNING")
        assert all(r.killed for r in old) and per_node(h.cluster, "v2") == {"head": 1, "worker": 1}

    run(scenario())
