"""Pure choices about a multi-host cluster: the head node, reachable proxy addresses, where a replacement
goes while a node does not answer, proxy retry delays, and the wording of port conflicts and replacements."""

from __future__ import annotations

import pytest

from serve_nb.core.cluster_nodes import (
    PROXY_RETRY_MAX_S,
    PROXY_RETRY_S,
    head_node_id,
    http_address,
    port_held_by_own_proxy_message,
    proxy_address,
    proxy_retry_delay,
    replacement_node,
    same_host_proxies,
)
from serve_nb.core.resources import HEAD_NODE_RESOURCE, NodeInfo
from serve_nb.core.status import DeploymentFacts, deployment_status
from serve_nb.types import DeploymentStatus, ReplicaState

HEAD = NodeInfo("head", {"CPU": 2.0, HEAD_NODE_RESOURCE: 1.0}, "10.0.0.1")
W1 = NodeInfo("w1", {"CPU": 2.0}, "10.0.0.2")
W2 = NodeInfo("w2", {"CPU": 2.0}, "10.0.0.3")


def test_the_head_is_the_alive_node_holding_the_head_resource():
    nodes = [
        {"NodeID": "dead-head", "Alive": False, "Resources": {HEAD_NODE_RESOURCE: 1.0}},
        {"NodeID": "w", "Alive": True, "Resources": {"CPU": 2.0}},
        {"NodeID": "h", "Alive": True, "Resources": {"CPU": 2.0, HEAD_NODE_RESOURCE: 1.0}},
    ]
    assert head_node_id(nodes) == "h"
    assert head_node_id(nodes[:2]) is None


@pytest.mark.parametrize(
    ("host", "node_ip", "expected"),
    [
        ("0.0.0.0", "10.0.0.2", "10.0.0.2:8000"),  # every interface: the node's own address
        ("::", "fd00::2", "[fd00::2]:8000"),
        ("127.0.0.1", "10.0.0.2", "127.0.0.1:8000"),  # loopback: as configured (this machine only)
        ("10.0.0.9", "10.0.0.2", "10.0.0.9:8000"),
        ("0.0.0.0", "", "0.0.0.0:8000"),  # node address unknown: nothing better to say
    ],
)
def test_a_proxy_is_reported_at_an_address_others_can_use(host, node_ip, expected):
    assert proxy_address(host, 8000, node_ip) == expected


def test_the_link_points_at_the_head_nodes_proxy():
    assert http_address("0.0.0.0", 8000, [W1, HEAD]) == "10.0.0.1:8000"
    assert http_address("0.0.0.0", 8000, [W1, HEAD], node_id="w1") == "10.0.0.2:8000"
    assert http_address("127.0.0.1", 8000, [W1, HEAD]) == "127.0.0.1:8000"


def test_a_replacement_goes_to_an_answering_node_with_room_and_fewest_replicas():
    need = {"CPU": 1.0}
    assert replacement_node([HEAD, W1, W2], set(), need, {}) is None, "nothing unresponsive: Ray decides"
    assert replacement_node([HEAD, W1, W2], {"w1"}, need, {"head": 2, "w2": 1}) == "w2"
    assert replacement_node([HEAD, W1, W2], {"w1"}, {"CPU": 3.0}, {}) is None, "nowhere fits: Ray decides"
    assert replacement_node([HEAD, W1], {"head", "w1"}, need, {}) is None


def test_a_failing_proxy_is_retried_ever_less_often_up_to_a_minute():
    delays = [proxy_retry_delay(n) for n in range(1, 8)]
    assert delays[0] == PROXY_RETRY_S
    assert delays == sorted(delays) and delays[-1] == PROXY_RETRY_MAX_S


def test_a_port_held_by_a_proxy_on_the_same_machine_is_named_without_port_advice():
    same_host = NodeInfo("w1b", {"CPU": 2.0}, "10.0.0.2")
    assert same_host_proxies("w1b", [HEAD, W1, same_host], {"head", "w1"}) == ["w1"]
    assert same_host_proxies("w2", [HEAD, W1, W2], {"head", "w1"}) == []
    message = port_held_by_own_proxy_message("0.0.0.0", 8000, ["w1"])
    assert "held by this Serve's own HTTP proxy on node w1" in message and "reuse_port" in message
    assert "8001" not in message


def test_replicas_lost_with_their_node_are_reported_as_replaced_not_as_an_update():
    replicas = [("v1", ReplicaState.RUNNING)] * 3 + [("v1", ReplicaState.STARTING)]
    lost = DeploymentFacts(4, "v1", replicas, unhealthy_message="replica ab12 died: ActorDiedError: node lost")
    status, message = deployment_status(lost)
    assert status == DeploymentStatus.UNHEALTHY
    assert message == "replica ab12 died: ActorDiedError: node lost. Replacing lost replicas: 3 of 4 running."
    assert "new version" not in message

    rollout = DeploymentFacts(2, "v2", [("v1", ReplicaState.RUNNING), ("v2", ReplicaState.RUNNING),
                                        ("v2", ReplicaState.STARTING)])
    assert deployment_status(rollout) == (DeploymentStatus.UPDATING,
                                          "Updating: 1 of 2 replicas running the new version.")
