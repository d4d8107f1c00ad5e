"""serve_nb.core.status: replica states -> deployment status -> application status."""

from __future__ import annotations

import pytest

from serve_nb.core.status import (
    SLOW_INIT_AFTER_S,
    DeploymentFacts,
    application_status,
    coarse_seconds,
    deployment_status,
    deployment_status_info,
    format_duration,
    init_report_due,
    replica_state_counts,
    slow_init_message,
    slow_initializers,
)
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


# --------------------------------------------------------------------------- replicas slow in __init__


@pytest.mark.parametrize(
    ("seconds", "coarse"), [(0.0, 0.0), (4.9, 0.0), (7.2, 5.0), (59.9, 55.0), (61.0, 60.0), (95.0, 90.0), (725.0, 720.0)]
)
def test_durations_in_status_are_coarse_so_it_changes_rarely(seconds, coarse):
    assert coarse_seconds(seconds) == coarse


@pytest.mark.parametrize(("seconds", "text"), [(5.0, "5 s"), (60.0, "1 min"), (150.0, "2 min 30 s"), (720.0, "12 min")])
def test_durations_read_as_people_say_them(seconds, text):
    assert format_duration(seconds) == text


def test_only_replicas_past_the_threshold_are_named():
    slow = slow_initializers({"a": SLOW_INIT_AFTER_S - 0.1, "b": SLOW_INIT_AFTER_S + 1, "c": 65.0})
    assert slow == {"b": 5.0, "c": 60.0}
    assert slow_init_message({}) == ""
    assert slow_init_message({"b": 5.0}) == "Replica b has been in __init__ for 5 s."
    assert slow_init_message(slow) == "Replicas c, b are still in __init__ (the longest for 1 min)."
    many = {rid: 10.0 for rid in "abcde"}
    assert slow_init_message(many) == "Replicas a, b, c and 2 more are still in __init__ (the longest for 10 s)."


def test_a_deployment_status_names_its_slow_replicas_after_the_progress_message():
    info = deployment_status_info("Model", facts(1, [("v1", STARTING)], in_init={"3fa2c1d0": 42.0}), lambda: "")
    assert info.message == "Updating: 0 of 1 replicas running the new version. Replica 3fa2c1d0 has been in __init__ for 40 s."
    assert info.initializing_for_s == {"3fa2c1d0": 40.0}
    quick = deployment_status_info("Model", facts(1, [("v1", STARTING)], in_init={"3fa2c1d0": 1.0}), lambda: "")
    assert "__init__" not in quick.message and quick.initializing_for_s == {}


def test_serve_run_reports_a_slow_init_once_then_rarely():
    reported = None
    said = []
    for second in range(0, 4000, 5):
        if init_report_due(float(second), reported):
            reported = float(second)
            said.append(second)
    assert said == [5, 30, 120, 600, 1800, 3600]


def test_a_deployment_whose_new_replicas_fail_health_checks_reads_unhealthy_and_its_app_deploy_failed():
    failed = facts(1, [], failed_message="New replicas failed their first health check 3 times", failed_health=True)
    assert deployment_status(failed)[0] == DS.UNHEALTHY
    status, message = application_status([("A", DS.UNHEALTHY, "x")], deleting=False, was_running=False,
                                         failed_to_deploy={"A"})
    assert (status, message) == (AS.DEPLOY_FAILED, "Deployment 'A' failed to deploy:\nx")
    assert application_status([("A", DS.UNHEALTHY, "x")], deleting=False, was_running=True)[0] == AS.UNHEALTHY
