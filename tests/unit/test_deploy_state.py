"""The deploy state a %%serve widget shows: stages set in place or appended in order, failure and finish flags."""

from __future__ import annotations

import dataclasses

import pytest

from serve_nb.notebook.deploy_state import DeployFailure, DeployStage, DeployState, StageState


def test_with_stage_appends_new_labels_in_order_and_replaces_known_ones_in_place():
    state = DeployState().with_stage("a", StageState.ACTIVE).with_stage("b", StageState.PENDING)
    moved = state.with_stage("a", StageState.DONE, "1/1")
    assert moved.stages == (DeployStage("a", StageState.DONE, "1/1"), DeployStage("b", StageState.PENDING))
    assert state.stages[0] == DeployStage("a", StageState.ACTIVE)  # the old state is untouched (frozen)


def test_failed_says_whether_a_failure_is_attached():
    state = DeployState((DeployStage("a"),))
    assert not state.failed
    failed = dataclasses.replace(state, failure=DeployFailure("RuntimeError: x", ("line",), kept=True, note="n"))
    assert failed.failed and failed.failure.kept and failed.failure.note == "n"
    with pytest.raises(dataclasses.FrozenInstanceError):
        failed.finished = True  # type: ignore[misc]
