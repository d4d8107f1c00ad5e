"""A replica's lifecycle as named phases, and a deployment's own bookkeeping (no Ray, no controller)."""

from __future__ import annotations

import asyncio

import pytest
from fake_cluster import FakeClock, run, spec

from serve_nb.control.deployment_state import DeploymentContext, DeploymentState
from serve_nb.control.replica_record import UNPLACED_AFTER_S, ReplicaRecord
from serve_nb.core.status import Scaling
from serve_nb.types import DeploymentID, DeploymentStatus, ReplicaInfo, ReplicaState

INFO = ReplicaInfo("r1", "127.0.0.1", 9000, None, "head", 1)


def _record() -> ReplicaRecord:
    return ReplicaRecord("r1", object(), "v1", "c1", started_at=100.0)  # type: ignore[arg-type]


def test_a_replica_goes_starting_running_updating_running_stopping():
    record = _record()
    assert record.state == ReplicaState.STARTING and not record.serving
    record.on_initialized(INFO)
    assert record.state == ReplicaState.RUNNING and record.serving and record.info == INFO
    record.begin_reconfigure()
    assert record.state == ReplicaState.UPDATING and record.serving
    record.on_reconfigured("c2")
    assert (record.state, record.config_version) == (ReplicaState.RUNNING, "c2")
    record.begin_stop()
    assert record.state == ReplicaState.STOPPING and not record.serving


def test_a_starting_replica_cannot_be_reconfigured():
    with pytest.raises(ValueError, match="no transition STARTING -> UPDATING"):
        _record().begin_reconfigure()


def test_a_stopping_replica_never_serves_again():
    record = _record()
    record.begin_stop()
    with pytest.raises(ValueError):
        record.on_initialized(INFO)


def test_health_failures_count_in_a_row():
    record = _record()
    assert [record.on_health_failure(), record.on_health_failure()] == [1, 2]
    record.on_health_ok()
    assert record.on_health_failure() == 1


def test_stopping_ends_the_replicas_lifecycle_tasks():
    async def scenario():
        record = _record()
        task = asyncio.ensure_future(asyncio.Event().wait())
        record.tasks.append(task)
        record.begin_stop()
        await asyncio.sleep(0)
        assert task.cancelled() and record.tasks == []

    run(scenario())


def test_a_replica_ray_has_not_placed_for_a_while_waits_for_resources():
    record = _record()
    assert not record.view(100.0 + UNPLACED_AFTER_S).waiting_for_resources
    assert record.view(100.0 + UNPLACED_AFTER_S + 1).waiting_for_resources
    record.on_placed(100.0 + UNPLACED_AFTER_S + 1)
    assert not record.view(100.0 + UNPLACED_AFTER_S + 1).waiting_for_resources


def _state(**options) -> DeploymentState:
    ctx = DeploymentContext(FakeClock(), lambda *a: None, lambda: None, lambda: None)  # type: ignore[arg-type]
    return DeploymentState(DeploymentID("app", "Model"), spec(**options), 2, ctx)


def test_a_redeploy_clears_a_failure_and_counts_as_a_change():
    state = _state(num_replicas=2)
    assert state.update(spec(num_replicas=2)) is False
    state.failed_message = "constructor failed"
    state.ctor_failures = 3
    assert state.update(spec(num_replicas=2)) is True
    assert state.failed_message is None and state.ctor_failures == 0
    assert state.update(spec(num_replicas=3)) is True and state.target == 3


def test_a_deployment_being_removed_aims_for_no_replicas():
    state = _state()
    assert state.remove() is True and state.remove() is False
    assert state.goal().target == 0 and state.target == 2, "the target is kept for a re-deploy"


def test_a_scaling_decision_is_recorded_and_settles_once_healthy():
    state = _state()
    state.scale(4, 5.0, "manual scale")
    assert (state.target, state.scaling) == (4, Scaling.UP)
    state.settle(DeploymentStatus.UPSCALING)
    assert state.scaling is Scaling.UP
    state.settle(DeploymentStatus.HEALTHY)
    assert state.scaling is None
    state.scale(1, 6.0, "manual scale")
    assert state.scaling is Scaling.DOWN
    assert [(e.from_replicas, e.to_replicas) for e in state.events] == [(2, 4), (4, 1)]
