"""The static HTML snapshot an application widget leaves in the saved notebook.

A live widget needs its kernel-side model; a notebook opened later (in JupyterLab without that kernel, on
GitHub, in nbviewer) has none. So every widget also puts plain HTML in its output: status badge, endpoint,
the deployments and replicas tables and the chart as inline SVG, as of the last update. Inline styles only
(GitHub and nbviewer drop ``<style>`` and scripts). Pure: a view-model in, a string out.
"""

from __future__ import annotations

from typing import Sequence

from serve_nb.notebook import chart
from serve_nb.notebook.deploy_state import DeployState, StageState
from serve_nb.notebook.views import REQUESTS_HEADER, AppView, DashboardRow, escape

FONT = "font-family:var(--jp-code-font-family,monospace);font-size:12px"
#: Marks the snapshot's element, so the live widget can find (and hide) the snapshot of itself.
SNAPSHOT_ATTR = "data-serve-nb-snapshot"
STAGE_ICONS = {StageState.PENDING: "○", StageState.ACTIVE: "◐", StageState.DONE: "✓", StageState.FAILED: "✗"}


def badge(text: str, color: str) -> str:
    return (f'<span style="background:{escape(color)};color:white;border-radius:10px;padding:1px 8px;'
            f'font-size:11px;font-weight:600">{escape(text)}</span>')


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An HTML table of already-escaped cells; "none" when there are no rows."""
    if not rows:
        return "<i>none</i>"
    head = "".join(f'<th style="text-align:left;padding:2px 10px 2px 0">{escape(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f'<td style="padding:1px 10px 1px 0">{c}</td>' for c in row) + "</tr>"
                   for row in rows)
    return f'<table style="border-collapse:collapse;{FONT}"><tr>{head}</tr>{body}</table>'


def deploy_state_html(state: DeployState | None) -> str:
    """The deploy's stage lines (with their state icons) and, when it failed, the error and the replicas' log."""
    if state is None or (not state.stages and state.failure is None):
        return ""
    lines = "".join(f'<div>{STAGE_ICONS[s.state]} {escape(s.label)}{" " + escape(s.detail) if s.detail else ""}'
                    f'</div>' for s in state.stages)
    failure = ""
    if state.failure is not None:
        logs = "\n".join(state.failure.log_lines)
        note = f"<div>{escape(state.failure.note)}</div>" if state.failure.note else ""
        failure = (f'<pre style="white-space:pre-wrap;color:#cf222e;{FONT}">{escape(state.failure.error)}</pre>{note}'
                   + (f'<pre style="white-space:pre-wrap;color:#57606a;{FONT}">{escape(logs)}</pre>' if logs else ""))
    return f'<div style="{FONT}">{lines}{failure}</div>'


def app_snapshot(view: AppView | None, name: str, now: float, events: Sequence[chart.ChartEvent] = (),
                 deploy: DeployState | None = None, snapshot_id: str = "") -> str:
    """The whole snapshot of one application widget (``view`` None: nothing known yet)."""
    if view is None:
        body = f"<b>{escape(name)}</b> <i>waiting for the first update</i>{deploy_state_html(deploy)}"
        return f'<div {SNAPSHOT_ATTR}="{escape(snapshot_id)}" style="{FONT}">{body}</div>'
    link = f' · <a href="{escape(view.url)}">{escape(view.url)}</a>' if view.url else ""
    failed_deploy = deploy is not None and deploy.failure is not None  # its error, cut to the cell, is below
    shown = ("" if failed_deploy else view.failure) or (view.message if view.deleted_at is not None else "")
    message = f'<pre style="white-space:pre-wrap;{FONT}">{escape(shown)}</pre>' if shown else ""
    deployments = table(
        ["deployment", "status", "running / target", REQUESTS_HEADER, "batching", "message"],
        [[escape(d.name), badge(d.status, d.color), d.replicas, escape(d.requests), escape(d.batches),
          escape(d.message)] for d in view.deployments])
    replicas = table(
        ["deployment", "replica", "state", "node", "pid", "ongoing", "up", "models"],
        [[escape(r.deployment), escape(r.replica_id), escape(r.state), escape(r.node), escape(r.pid), str(r.ongoing),
          escape(r.uptime), escape(r.models)] for r in view.replicas])
    return (f'<div {SNAPSHOT_ATTR}="{escape(snapshot_id)}" class="serve-nb-snapshot" style="{FONT}">'
            f'<div><b>{escape(view.name)}</b> {badge(view.status, view.color)}{link}</div>{message}'
            f'{deploy_state_html(deploy)}'
            f'<div style="margin-top:4px">{deployments}</div><div style="margin-top:4px">{replicas}</div>'
            f'<div style="margin-top:4px">{chart.chart_svg(view.history, now, events)}</div>'
            f'<div style="color:#57606a">Snapshot of the live widget (serve_nb).</div></div>')


def dashboard_snapshot(rows: Sequence[DashboardRow], snapshot_id: str = "") -> str:
    """The dashboard's snapshot: one line per application."""
    if not rows:
        body = "<i>No applications.</i>"
    else:
        body = table(["application", "status", "route", "replicas", "requests"],
                     [[escape(r.name), badge(r.status, r.color), escape(r.route_prefix), escape(r.replicas),
                       "<br>".join(escape(line) for line in r.requests)] for r in rows])
    return (f'<div {SNAPSHOT_ATTR}="{escape(snapshot_id)}" class="serve-nb-snapshot" style="{FONT}">'
            f'<b>serve_nb applications</b>{body}</div>')
