"""View-models as JSON for the widgets' front end (``frontend/app.js``), and the chart's event list.

The front end only draws: every number, label and color it shows comes from here, so what it shows is
tested in Python. Pure: no Ray, no widgets.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from serve_nb.notebook import chart
from serve_nb.notebook.deploy_state import DeployState
from serve_nb.notebook.snapshot import STAGE_ICONS
from serve_nb.notebook.views import REQUESTS_HEADER, AppView, DashboardRow, autoscaling_note
from serve_nb.types import AppDetail

#: Chart events kept per widget (older ones fall off the time line anyway).
MAX_EVENTS = 200


def scaling_events(detail: AppDetail | None) -> list[chart.ChartEvent]:
    """The autoscaler's (and manual scaling's) decisions of every deployment, as chart events."""
    if detail is None:
        return []
    return [chart.ChartEvent(e.time, chart.EventKind.SCALE,
                             f"{d.name}: {e.from_replicas} → {e.to_replicas} ({e.reason})")
            for d in detail.deployments for e in d.events]


def status_event(previous: str | None, status: str, at: float) -> chart.ChartEvent | None:
    """A marker for a change of the app's status the widget saw: a rollout starting, or a failure."""
    if status == previous:
        return None
    if status in ("DEPLOYING", "UPDATING") and previous is not None:
        return chart.ChartEvent(at, chart.EventKind.ROLLOUT, f"{status.lower()} started")
    if status in ("DEPLOY_FAILED", "UNHEALTHY"):
        return chart.ChartEvent(at, chart.EventKind.FAILURE, status)
    return None


def merge_events(kept: Sequence[chart.ChartEvent], new: Sequence[chart.ChartEvent]) -> tuple[chart.ChartEvent, ...]:
    """The widget's events plus ``new`` ones, without duplicates, oldest first, at most ``MAX_EVENTS``."""
    merged = sorted(set(kept) | set(new), key=lambda e: (e.time, e.kind.value, e.text))
    return tuple(merged[-MAX_EVENTS:])


def events_payload(events: Sequence[chart.ChartEvent]) -> list[dict[str, Any]]:
    return [{"t": e.time, "kind": e.kind.value, "text": e.text, "color": chart.EVENT_COLORS[e.kind]} for e in events]


def app_payload(view: AppView | None, now: float, events: Sequence[chart.ChartEvent] = (),
                autoscaling_configs: dict[str, dict] | None = None, dashboard_url: str | None = None) -> dict[str, Any]:
    """Everything the app widget draws, JSON-able (``{}``: nothing known yet); ``dashboard_url``: Ray's, if any."""
    if view is None:
        return {}
    configs = autoscaling_configs or {}
    return {
        "name": view.name, "status": view.status, "color": view.color, "message": view.message,
        "failure": view.failure, "url": view.url, "curl": view.curl, "ingress": view.ingress,
        "deleted": view.deleted_at is not None, "controls": view.controls_enabled,
        "scale_options": list(view.scale_options), "scale_choice": view.scale_choice(), "now": now,
        "requests_header": REQUESTS_HEADER, "dashboard_url": dashboard_url,
        "deployments": [{**dataclasses.asdict(d), "replicas": d.replicas, "autoscaling_config": configs.get(d.name)}
                        for d in view.deployments],
        "replicas": [dataclasses.asdict(r) for r in view.replicas],
        "autoscaling": [dataclasses.asdict(a) for a in view.autoscaling],
        "autoscaling_note": autoscaling_note(view),
        "history": [list(p) for p in view.history],
        "events": events_payload(events),
        "colors": {"replicas": chart.REPLICA_COLOR, "load": chart.LOAD_COLOR},
    }


def deploy_payload(state: DeployState | None) -> dict[str, Any]:
    """The deploy's stages and failure for the front end (``{}``: no deploy to show)."""
    if state is None:
        return {}
    failure = state.failure
    return {
        "stages": [{"label": s.label, "state": s.state.value, "icon": STAGE_ICONS[s.state], "detail": s.detail}
                   for s in state.stages],
        "failure": None if failure is None else {"error": failure.error, "log_lines": list(failure.log_lines),
                                                 "kept": failure.kept, "note": failure.note},
        "finished": state.finished,
    }


def dashboard_payload(rows: Sequence[DashboardRow]) -> list[dict[str, Any]]:
    return [r._asdict() | {"requests": list(r.requests)} for r in rows]
