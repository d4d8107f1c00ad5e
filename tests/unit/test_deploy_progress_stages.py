"""The stages of a deploy read off the controller's app details: code shipped, replicas n/m of the NEW version,
health checks, routing; a failure marks the stage it was at; the minimal HTML shows lines, note, error, logs."""

from __future__ import annotations

from serve_nb.notebook import deploy_progress as progress
from serve_nb.notebook.deploy_state import DeployFailure, StageState
from serve_nb.types import AppDetail, DeploymentDetail, ReplicaDetail

A, D, P, F = StageState.ACTIVE, StageState.DONE, StageState.PENDING, StageState.FAILED


def replica(rid: str, state: str, version: str) -> ReplicaDetail:
    return ReplicaDetail(rid, state, "node", 1, 0.0, 0, version)


def detail(status: str, dep_status: str, *replicas: ReplicaDetail, target: int = 2) -> AppDetail:
    return AppDetail("shop", status, "", "/shop", "Model", None,
                     (DeploymentDetail("Model", dep_status, "", target, 0, replicas, version="v2"),))


def lines(state) -> list[tuple[str, StageState, str]]:
    return [(s.label, s.state, s.detail) for s in state.stages]


def test_a_rerun_goes_through_every_stage_counting_only_the_new_versions_replicas():
    state = progress.initial_state(http=True)
    assert lines(state) == [("code shipped", A, ""), ("replicas starting", P, ""), ("health checks", P, ""),
                            ("routing switched", P, "")]
    old_running = detail("RUNNING", "HEALTHY", replica("a", "RUNNING", "v1"), replica("b", "RUNNING", "v1"))
    assert progress.progress(state, old_running) == state  # before the controller has the code: about the old app
    state = progress.shipped(state)
    seen = [lines(state)[1]]
    for value in (
        detail("DEPLOYING", "UPDATING", replica("a", "RUNNING", "v1"), replica("b", "RUNNING", "v1"),
               replica("c", "STARTING", "v2")),
        detail("DEPLOYING", "UPDATING", replica("a", "RUNNING", "v1"), replica("c", "RUNNING", "v2"),
               replica("d", "STARTING", "v2")),
        detail("DEPLOYING", "UPDATING", replica("a", "STOPPING", "v1"), replica("c", "RUNNING", "v2"),
               replica("d", "RUNNING", "v2")),
    ):
        state = progress.progress(state, value)
        seen.append(lines(state)[1])
    assert seen == [("replicas starting", A, ""), ("replicas starting", A, "0/2"), ("replicas starting", A, "1/2"),
                    ("replicas starting", D, "2/2")]
    assert lines(state)[2:] == [("health checks", A, ""), ("routing switched", P, "")]
    state = progress.progress(state, detail("RUNNING", "HEALTHY", replica("c", "RUNNING", "v2"),
                                            replica("d", "RUNNING", "v2")))
    assert lines(state)[2:] == [("health checks", D, ""), ("routing switched", A, "")]
    state = progress.finished(state)
    assert state.finished and not state.failed and {s.state for s in state.stages} == {D}


def test_a_failure_marks_the_stage_it_was_at_and_keeps_the_error_and_log_lines():
    state = progress.shipped(progress.initial_state(http=False))
    state = progress.progress(state, detail("DEPLOYING", "UPDATING", replica("c", "STARTING", "v2"), target=1))
    failure = DeployFailure("Cell In[3], line 4\nRuntimeError: <boom>", ("loading weights",), False,
                            progress.failure_note(was_serving=False, kept=False, app_name="shop"))
    state = progress.failed(state, failure)
    assert lines(state) == [("code shipped", D, ""), ("replicas starting", F, "0/1"), ("health checks", P, ""),
                            ("routing switched", P, progress.NO_HTTP)]
    assert state.failed and state.finished
    html = progress.state_html(state)
    assert "✗ replicas starting 0/1" in html and "&lt;boom&gt;" in html and "<boom>" not in html
    assert "loading weights" in html and "--keep-failed" in html


def test_the_note_says_what_is_left_after_a_failure():
    assert "keeps serving" in progress.failure_note(was_serving=True, kept=True, app_name="shop")
    assert "DEPLOY_FAILED" in progress.failure_note(was_serving=False, kept=True, app_name="shop")
    assert "removed" in progress.failure_note(was_serving=False, kept=False, app_name="shop")
