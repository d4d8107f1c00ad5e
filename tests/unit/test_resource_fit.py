"""Whether a replica fits the cluster, and the message that says why replicas are not up yet."""

from __future__ import annotations

from serve_nb.core.resources import (
    PENDING_RESOURCES_TAG,
    SLOW_START_S,
    StartingReplica,
    fits_any_node,
    pending_resources_message,
    resource_request,
)
from serve_nb.core.status import DeploymentFacts, deployment_status_info
from serve_nb.types import DeploymentStatus, ReplicaState

NODES = [{"CPU": 4.0, "GPU": 0.0}, {"CPU": 2.0, "GPU": 1.0}]


def test_a_replica_asks_for_one_cpu_unless_told_otherwise():
    assert resource_request({}) == {"CPU": 1.0}
    assert resource_request({"num_cpus": 0, "num_gpus": 1, "memory": 2e9, "resources": {"tpu": 2}}) == {
        "GPU": 1.0, "memory": 2e9, "tpu": 2.0}


def test_a_request_fits_if_one_node_has_all_of_it():
    assert fits_any_node({"CPU": 2.0, "GPU": 1.0}, NODES)
    assert not fits_any_node({"CPU": 4.0, "GPU": 1.0}, NODES)
    assert fits_any_node({"CPU": 64.0}, []), "unknown nodes: no false alarm"


def test_no_message_without_replicas_starting_or_while_starts_are_young():
    assert pending_resources_message({}, NODES, [], now=100.0) == ""
    assert pending_resources_message({}, NODES, [StartingReplica(95.0, placed=False)], now=100.0) == ""
    assert pending_resources_message({}, NODES, [StartingReplica(0.0, placed=True)], now=100.0) == ""


def test_a_request_no_node_can_hold_says_so_at_once():
    message = pending_resources_message({"num_gpus": 2}, NODES, [StartingReplica(99.0, False)], now=100.0)
    assert message.startswith(PENDING_RESOURCES_TAG) and "more than any node" in message


def test_replicas_unplaced_for_long_say_the_cluster_may_be_full():
    message = pending_resources_message({}, NODES, [StartingReplica(100.0 - SLOW_START_S - 1, False)], now=100.0)
    assert message.startswith(PENDING_RESOURCES_TAG) and "1 replica(s) have been starting" in message


def test_a_deployment_waiting_for_resources_says_so_after_its_progress():
    busy = DeploymentFacts(1, "v1", [("v1", ReplicaState.STARTING)])
    info = deployment_status_info("Model", busy, lambda: f"{PENDING_RESOURCES_TAG}: full")
    assert (info.status, info.waiting_for_resources) == (DeploymentStatus.UPDATING, True)
    assert info.message == f"Updating: 0 of 1 replicas running the new version. {PENDING_RESOURCES_TAG}: full"


def test_a_deployment_with_nothing_pending_is_not_flagged():
    busy = DeploymentFacts(1, "v1", [("v1", ReplicaState.STARTING)])
    info = deployment_status_info("Model", busy, lambda: "")
    assert info.waiting_for_resources is False and info.message.startswith("Updating")


def test_a_failed_deployment_keeps_its_failure_message_alone():
    failed = DeploymentFacts(1, "v1", [("v1", ReplicaState.STARTING)], failed_message="boom")
    asked: list[bool] = []
    info = deployment_status_info("Model", failed, lambda: asked.append(True) or f"{PENDING_RESOURCES_TAG}: full")
    assert (info.status, info.message, info.waiting_for_resources) == (DeploymentStatus.DEPLOY_FAILED, "boom", False)
    assert asked == []
