"""serve_nb.core.status: replica states -> deployment status -> application status."""

from __future__ import annotations

import pytest

from serve_nb.core.status import DeploymentFacts, application_status, deployment_status, replica_state_counts
from serve_nb.types import ApplicationStatus as AS
from serve_nb.types import DeploymentStatus as DS
from serve_nb.types import ReplicaState

RUNNING, STARTING, UPDATING, STOPPING = (
    ReplicaState.RUNNING,
    ReplicaState.STARTING,
    ReplicaState.UPDATING,
    ReplicaState.STOPPING,
)


def facts(target, replicas, version="v1", **kw):
    return DeploymentFacts(target=target, version=version, replicas=replicas, **kw)


# --------------------------------------------------------------------------- deployment_status


def test_healthy_when_target_replicas_of_current_version_running():
    assert deployment_status(facts(2, [("v1", RUNNING), ("v1", RUNNING)])) == (DS.HEALTHY, "")


def test_zero_target_and_no_replicas_is_healthy():
    assert deployment_status(facts(0, []))[0] == DS.HEALTHY


def test_failed_message_wins_over_everything():
    status, msg = deployment_status(
        facts(2, [("v1", RUNNING), ("v1", RUNNING)], failed_message="ctor boom", unhealthy_message="x", scaling="up")
    )
    assert (status, msg) == (DS.DEPLOY_FAILED, "ctor boom")


def test_unhealthy_message_gives_unhealthy():
    status, msg = deployment_status(facts(1, [("v1", RUNNING)], unhealthy_message="health check failed"))
    assert (status, msg) == (DS.UNHEALTHY, "health check failed")


@pytest.mark.parametrize(
    "target, replicas",
    [
        (2, []),
        (2, [("v1", RUNNING), ("v1", STARTING)]),
        (1, [("v0", RUNNING)]),  # old version still running
        (1, [("v1", RUNNING), ("v0", RUNNING)]),  # old one not yet stopped
        (1, [("v1", RUNNING), ("v0", STOPPING)]),  # old one still stopping
        (1, [("v1", UPDATING)]),  # being reconfigured
    ],
)
def test_updating_when_not_settled(target, replicas):
    status, msg = deployment_status(facts(target, replicas))
    assert status == DS.UPDATING
    assert f"of {target} replicas" in msg


def test_updating_message_counts_running_current_replicas():
    _, msg = deployment_status(facts(3, [("v1", RUNNING), ("v0", RUNNING), ("v1", STARTING)]))
    assert msg == "Updating: 1 of 3 replicas running the new version."


def test_upscaling_and_downscaling():
    status, msg = deployment_status(facts(3, [("v1", RUNNING), ("v1", STARTING)], scaling="up"))
    assert status == DS.UPSCALING and "3" in msg
    status, msg = deployment_status(facts(1, [("v1", RUNNING), ("v1", STOPPING)], scaling="down"))
    assert status == DS.DOWNSCALING and "1" in msg


def test_scaling_flag_with_settled_replicas_is_healthy():
    assert deployment_status(facts(2, [("v1", RUNNING)] * 2, scaling="up"))[0] == DS.HEALTHY


def test_replica_state_counts():
    counts = replica_state_counts([("v1", RUNNING), ("v0", RUNNING), ("v1", STARTING), ("v0", STOPPING)])
    assert counts == {"RUNNING": 2, "STARTING": 1, "STOPPING": 1}
    assert list(counts) == sorted(counts)
    assert replica_state_counts([]) == {}


# --------------------------------------------------------------------------- application_status


def test_all_healthy_is_running():
    assert application_status([("A", DS.HEALTHY, ""), ("B", DS.HEALTHY, "")], deleting=False, was_running=False) == (
        AS.RUNNING,
        "",
    )


def test_deleting_wins():
    status, _ = application_status([("A", DS.DEPLOY_FAILED, "x")], deleting=True, was_running=True)
    assert status == AS.DELETING


def test_deploy_failed_names_first_failed_deployment():
    deps = [("A", DS.HEALTHY, ""), ("B", DS.DEPLOY_FAILED, "boom"), ("C", DS.DEPLOY_FAILED, "bang")]
    status, msg = application_status(deps, deleting=False, was_running=True)
    assert status == AS.DEPLOY_FAILED
    assert "'B'" in msg and "boom" in msg and "'C'" not in msg


def test_deploy_failed_wins_over_unhealthy():
    deps = [("A", DS.UNHEALTHY, "sick"), ("B", DS.DEPLOY_FAILED, "boom")]
    assert application_status(deps, deleting=False, was_running=True)[0] == AS.DEPLOY_FAILED


def test_unhealthy():
    deps = [("A", DS.HEALTHY, ""), ("B", DS.UNHEALTHY, "sick"), ("C", DS.UPDATING, "")]
    status, msg = application_status(deps, deleting=False, was_running=True)
    assert status == AS.UNHEALTHY
    assert "'B'" in msg and "sick" in msg


@pytest.mark.parametrize("scaling", [DS.UPSCALING, DS.DOWNSCALING])
def test_running_app_that_autoscales_stays_running(scaling):
    deps = [("A", DS.HEALTHY, ""), ("B", scaling, "")]
    assert application_status(deps, deleting=False, was_running=True)[0] == AS.RUNNING


@pytest.mark.parametrize("scaling", [DS.UPSCALING, DS.DOWNSCALING])
def test_scaling_before_first_running_is_deploying(scaling):
    deps = [("A", DS.HEALTHY, ""), ("B", scaling, "")]
    assert application_status(deps, deleting=False, was_running=False)[0] == AS.DEPLOYING


@pytest.mark.parametrize("was_running", [False, True])
def test_updating_deployment_makes_app_deploying(was_running):
    deps = [("A", DS.HEALTHY, ""), ("B", DS.UPDATING, "Updating")]
    assert application_status(deps, deleting=False, was_running=was_running) == (AS.DEPLOYING, "Deploying.")


def test_roll_up_from_facts():
    a = deployment_status(facts(1, [("v1", RUNNING)]))
    b = deployment_status(facts(2, [("v1", RUNNING), ("v1", STARTING)], scaling="up"))
    deps = [("A", *a), ("B", *b)]
    assert application_status(deps, deleting=False, was_running=True)[0] == AS.RUNNING
    assert application_status(deps, deleting=False, was_running=False)[0] == AS.DEPLOYING
