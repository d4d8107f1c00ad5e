"""Replicas started while the cluster was one machine listen on loopback; when another machine joins,
the controller has them listen on their node's IP too and publishes the new addresses (fakes, no Ray)."""

from __future__ import annotations

from fake_cluster import HEAD, Harness, quiesce, run, spec, until

from serve_nb.core.policy import is_loopback, spans_machines
from serve_nb.core.resources import NodeInfo
from serve_nb.core.snapshots import replicas_key


def test_addresses_only_this_machine_reaches_are_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("10.0.0.5") and not is_loopback("fe80::1") and not is_loopback("node-3")


def test_several_nodes_on_one_address_are_still_one_machine():
    one = [NodeInfo("a", ip="10.0.0.1"), NodeInfo("b", ip="10.0.0.1")]
    assert not spans_machines(one)
    assert spans_machines([*one, NodeInfo("c", ip="10.0.0.2")])
    assert not spans_machines([NodeInfo("a"), NodeInfo("b")]), "nodes whose address is unknown say nothing"


def test_when_a_second_machine_joins_loopback_replicas_listen_on_their_node_ip_and_are_republished():
    async def scenario():
        h = Harness()
        h.cluster.nodes = [NodeInfo(HEAD.node_id, HEAD.resources, "10.0.0.1")]
        core = await h.start()
        await core.deploy_app("app", "/app", "Model", [spec(num_replicas=2)])
        await h.wait_status("RUNNING")
        await h.tick()
        replicas = h.cluster.live()
        assert [r.opened for r in replicas] == [0, 0], "one machine: loopback is enough"

        h.cluster.nodes.append(NodeInfo("worker", {"CPU": 4.0}, "10.0.0.2"))
        await h.tick()
        await until(lambda: all(r.opened == 1 for r in replicas), "both replicas to open to the network")
        published = h.published(replicas_key("app", "Model")).replicas
        assert sorted(i.host for i in published) == ["10.0.0.1", "10.0.0.1"]
        await h.tick()
        await quiesce()
        assert [r.opened for r in replicas] == [1, 1], "asked once each"

    run(scenario())
