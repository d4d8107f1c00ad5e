"""The stages of one ``%%serve`` deploy, read off what the controller publishes about the app.

Four lines, in the order a deploy passes them: the code reaches the controller ("code shipped"), the new
version's replicas start ("replicas starting n/m": replicas of the version being deployed that run, out of the
target), the controller reports every deployment healthy ("health checks": a replica counts as running only
once its constructor returned and it answered its first health check, and a deployment reads HEALTHY once
every replica of its new version does and the old ones are gone), and the proxies route the prefix to the new
version ("routing switched"; for ``--no-http`` apps there is nothing to switch). Pure: the magic feeds it the
``AppDetail`` values the feed delivers and hands each state to the widget.
"""

from __future__ import annotations

import html
from dataclasses import replace

from serve_nb.notebook.deploy_state import DeployFailure, DeployState, StageState
from serve_nb.types import AppDetail

CODE_SHIPPED = "code shipped"
REPLICAS = "replicas starting"
HEALTH = "health checks"
ROUTING = "routing switched"
STAGES = (CODE_SHIPPED, REPLICAS, HEALTH, ROUTING)
NO_HTTP = "no HTTP route (--no-http)"
LOG_TAIL = 20  # replica log lines a failure keeps


def initial_state(http: bool) -> DeployState:
    """Before the controller has the code: shipping it is under way, the rest pending."""
    state = DeployState()
    for label in STAGES:
        state = state.with_stage(label, StageState.PENDING)
    state = state.with_stage(CODE_SHIPPED, StageState.ACTIVE)
    return state if http else state.with_stage(ROUTING, StageState.PENDING, NO_HTTP)


def shipped(state: DeployState, deployed_at: float = 0.0) -> DeployState:
    """The controller accepted the app (at ``deployed_at``, its ``last_deployed_time_s``): replicas start now."""
    return replace(state, since=deployed_at).with_stage(CODE_SHIPPED, StageState.DONE).with_stage(REPLICAS, StageState.ACTIVE,
                                                                       _detail_of(state, REPLICAS))


def progress(state: DeployState, detail: AppDetail | None) -> DeployState:
    """``state`` moved on by what ``detail`` says. Only stages after "code shipped" move: a value from before the
    controller took the new code (older than ``state.since``) is about the old version, and is ignored."""
    if (detail is None or state.finished or state.failed or _state_of(state, CODE_SHIPPED) != StageState.DONE
            or detail.deployed_at < state.since):
        return state
    deployments = detail.deployments
    target = sum(d.target for d in deployments)
    running = sum(
        1 for d in deployments for r in d.replicas if r.state == "RUNNING" and (not d.version or r.version == d.version)
    )
    counted = f"{min(running, target)}/{target}" if deployments else ""
    if deployments and running >= target:
        state = state.with_stage(REPLICAS, StageState.DONE, counted)
        healthy = all(d.status == "HEALTHY" for d in deployments) and detail.status == "RUNNING"
        state = state.with_stage(HEALTH, StageState.DONE if healthy else StageState.ACTIVE)
    elif _state_of(state, REPLICAS) != StageState.DONE:
        state = state.with_stage(REPLICAS, StageState.ACTIVE, counted)
    if _state_of(state, HEALTH) == StageState.DONE and _state_of(state, ROUTING) == StageState.PENDING:
        state = state.with_stage(ROUTING, StageState.ACTIVE, _detail_of(state, ROUTING))
    return state


def finished(state: DeployState) -> DeployState:
    """The deploy is done: the app runs and the proxies route to it."""
    for stage in state.stages:
        state = state.with_stage(stage.label, StageState.DONE, stage.detail)
    return replace(state, finished=True)


def failed(state: DeployState, failure: DeployFailure) -> DeployState:
    """The deploy failed: the stage it was at is marked failed, the failure attached."""
    stages = state.stages
    at = next((s for s in stages if s.state == StageState.ACTIVE), None) or next(
        (s for s in stages if s.state == StageState.PENDING), None)
    if at is not None:
        state = state.with_stage(at.label, StageState.FAILED, at.detail)
    return replace(state, failure=failure, finished=True)


def failure_note(*, was_serving: bool, kept: bool, app_name: str) -> str:
    """What is left of the app after its deploy failed, and what to do, in a sentence."""
    if was_serving:
        return (f"The update failed; the version that ran before keeps serving '{app_name}' (as Ray Serve does). "
                "Fix the cell and run it again, or Retry.")
    if kept:
        return (f"The failed application '{app_name}' is kept (DEPLOY_FAILED) for inspection; "
                f"Delete removes it.")
    return (f"Nothing was left deployed: the failed application '{app_name}' was removed "
            "(use --keep-failed to keep it). Fix the cell and run it again, or Retry.")


def log_tail(detail: AppDetail | None) -> tuple[str, ...]:
    """The replicas' last log lines, which often say what the traceback does not (a missing file, a download)."""
    return tuple(detail.logs[-LOG_TAIL:]) if detail is not None else ()


def _state_of(state: DeployState, label: str) -> StageState | None:
    return next((s.state for s in state.stages if s.label == label), None)


def _detail_of(state: DeployState, label: str) -> str:
    return next((s.detail for s in state.stages if s.label == label), "")


_MARKS = {StageState.PENDING: "○", StageState.ACTIVE: "◔", StageState.DONE: "✓", StageState.FAILED: "✗"}
_COLORS = {StageState.PENDING: "#8c959f", StageState.ACTIVE: "#0969da", StageState.DONE: "#1a7f37",
           StageState.FAILED: "#cf222e"}
_PRE = "white-space:pre-wrap;font-family:var(--jp-code-font-family,monospace);font-size:12px;margin:4px 0"


def stage_line(label: str, state: StageState, detail: str) -> str:
    """One progress line as text: ``✓ replicas starting 2/2``."""
    return " ".join(part for part in (_MARKS[state], label, detail) if part)


def state_html(state: DeployState) -> str:
    """The deploy as the minimal widget shows it: one line per stage; for a failure, the note, the error and
    the replicas' last log lines. A finished deploy that did not fail shows nothing more than its stages."""
    lines = "".join(
        f'<div class="serve-nb-stage" style="color:{_COLORS[s.state]}">'
        f"{html.escape(stage_line(s.label, s.state, s.detail))}</div>"
        for s in state.stages
    )
    parts = [f'<div class="serve-nb-deploy">{lines}']
    failure = state.failure
    if failure is not None:
        if failure.note:
            parts.append(f"<div><i>{html.escape(failure.note)}</i></div>")
        parts.append(f'<pre class="serve-nb-deploy-error" style="{_PRE};color:#cf222e">{html.escape(failure.error)}'
                     "</pre>")
        if failure.log_lines:
            parts.append(f'<details><summary>replica log, last {len(failure.log_lines)} lines</summary>'
                         f'<pre style="{_PRE}">{html.escape(chr(10).join(failure.log_lines))}</pre></details>')
    parts.append("</div>")
    return "".join(parts)
