"""Widget view-models: controller snapshots in, plain display data out (rows, badges, chart).

The ipywidgets layer only copies these strings into traits, and only when they changed. Numbers a
widget acts on (replica counts) stay numbers here; their display text is derived from them, so no
widget ever parses text back. Pure: no Ray, no ipywidgets, so it is unit-tested as is.
"""

from __future__ import annotations

import html
import ipaddress
import json
import shlex
import time
import urllib.parse
from dataclasses import dataclass
from typing import NamedTuple, Sequence

from serve_nb.core.request_stats import REQUEST_WINDOW_S
from serve_nb.types import (AppDetail, ApplicationStatus, ApplicationStatusInfo, DeploymentDetail, ReplicaDetail,
                            RequestSummary)

BADGE_COLORS = {
    "RUNNING": "#1a7f37",
    "HEALTHY": "#1a7f37",
    "DEPLOYING": "#9a6700",
    "UPDATING": "#9a6700",
    "UPSCALING": "#0969da",
    "DOWNSCALING": "#0969da",
    "DEPLOY_FAILED": "#cf222e",
    "UNHEALTHY": "#cf222e",
    "DELETING": "#6e7781",
    "DELETED": "#6e7781",
    "NOT_STARTED": "#6e7781",
}
UNKNOWN_COLOR = "#6e7781"
#: The application states whose message is an error worth showing under the header.
FAILED_STATUSES = frozenset({ApplicationStatus.DEPLOY_FAILED, ApplicationStatus.UNHEALTHY})
#: Pseudo-status of a widget whose application was deleted (the controller has no such state).
DELETED = "DELETED"
#: The statuses in which nothing is left to scale, delete or send requests to.
GONE_STATUSES = frozenset({DELETED, "DELETING"})
#: How the autoscaling panel reads for an app none of whose deployments autoscale.
NO_AUTOSCALING = "No deployment of this app autoscales."
DAY_S = 86400.0
NODE_ID_CHARS = 8  # enough to tell nodes apart in a table
LOG_LINES = 60  # replica output lines kept in the log pane
RECENT_EVENTS = 5  # scaling events listed per deployment
CHART_WINDOW_S = 300.0
CHART_WIDTH, CHART_HEIGHT = 360.0, 90.0
RESPONSE_PREVIEW_CHARS = 5000  # longer answers are cut, so the request panel stays responsive
MODELS_SHOWN = 4  # multiplexed models listed per replica; more are counted
#: A deployment that served nothing over the window of ``RequestSummary``.
IDLE = "idle"
#: The header over ``request_summary``'s figures.
REQUESTS_HEADER = f"requests, last {REQUEST_WINDOW_S:g} s"


@dataclass(frozen=True)
class DeploymentRow:
    """One deployment in the table. ``running`` and ``target`` are what the +/- buttons act on."""

    name: str
    status: str
    color: str
    running: int
    target: int
    message: str
    autoscaling: bool
    batches: str = ""  # recent @serve.batch sizes, summarised ("" if it does not batch)
    requests: str = IDLE  # requests/s, p50/p99 and errors over the last minute

    @property
    def replicas(self) -> str:
        """The "running / target" cell, derived from the numbers (never parsed back)."""
        return f"{self.running} / {self.target}"


@dataclass(frozen=True)
class ReplicaRow:
    deployment: str
    replica_id: str
    state: str
    node: str
    pid: str
    ongoing: int
    uptime: str  # "since HH:MM:SS": a start time cannot go stale between updates, a duration would
    models: str = ""  # the multiplexed models it holds or is loading


@dataclass(frozen=True)
class AutoscalingView:
    deployment: str
    settings: str
    last_decision: str
    events: tuple[str, ...]


@dataclass(frozen=True)
class AppView:
    name: str
    status: str
    color: str
    message: str
    url: str | None
    curl: str | None
    deployments: tuple[DeploymentRow, ...]
    replicas: tuple[ReplicaRow, ...]
    autoscaling: tuple[AutoscalingView, ...]
    chart_svg: str
    logs: str
    log_lines: tuple[str, ...] = ()  # every replica line the controller keeps, for ``log_text``'s filter
    ingress: str = ""  # the ingress deployment: what the scale buttons act on when there are several
    history: tuple[tuple[float, int, float], ...] = ()  # the chart's points, kept so a deleted app's chart stays
    deleted_at: float | None = None  # when the widget learnt the app was deleted (None: it exists)

    @property
    def failure(self) -> str:
        """The message to show as an error under the header, or "" when the app is not failing."""
        return self.message if self.status in FAILED_STATUSES else ""

    @property
    def controls_enabled(self) -> bool:
        """Whether scale, delete and send can act: not on an app that is gone or going."""
        return self.status not in GONE_STATUSES

    @property
    def scale_options(self) -> tuple[str, ...]:
        """The deployments the +/- buttons may resize: the fixed-size ones (the autoscaler owns the others)."""
        return tuple(d.name for d in self.deployments if not d.autoscaling) if self.controls_enabled else ()

    def scale_choice(self, current: str | None = None) -> str | None:
        """The deployment the +/- buttons act on: the user's ``current`` pick while it can still be scaled, else
        the ingress when it can, else the first that can; None when none can (the buttons are then disabled)."""
        options = self.scale_options
        for name in (current, self.ingress):
            if name in options:
                return name
        return options[0] if options else None


class DashboardRow(NamedTuple):
    """One application in the dashboard."""

    name: str
    status: str
    color: str
    route_prefix: str  # "(no HTTP)" when the app has none
    replicas: str  # "running / target replicas" summed over its deployments
    requests: tuple[str, ...] = ()  # "Deployment: figures" per deployment (``request_summary``)


def badge_color(status: str) -> str:
    return BADGE_COLORS.get(status, UNKNOWN_COLOR)


def format_uptime(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def clock(t: float, now: float) -> str:
    """A wall-clock time as the user's own clock reads it (with the date once it is a day old)."""
    return time.strftime("%H:%M:%S" if now - t < DAY_S else "%b %d %H:%M:%S", time.localtime(t))


def endpoint_url(detail: AppDetail) -> str | None:
    if detail.route_prefix is None or detail.http_address is None:
        return None
    return f"http://{detail.http_address}{'' if detail.route_prefix == '/' else detail.route_prefix}"


def request_url(endpoint: str, path: str = "") -> str:
    """The endpoint plus the request panel's sub-path (with or without its leading slash); a bare query
    string or fragment attaches to the endpoint itself, with no slash before it (except the root path's own)."""
    path = path.strip()
    if path.startswith(("?", "#")):
        base = endpoint.rstrip("/")
        return base + ("" if urllib.parse.urlsplit(base).path else "/") + path
    return endpoint.rstrip("/") + ("/" + path.lstrip("/") if path else "")


def curl_line(url: str, method: str = "GET", body: str | None = None) -> str:
    parts = ["curl", "-s", "-X", method, url]
    if body:
        parts += ["-H", "content-type: application/json", "-d", body]
    return " ".join(shlex.quote(p) for p in parts)


def _autoscaling_settings(auto: dict) -> str:
    return (
        f"min {auto['min_replicas']}, max {auto['max_replicas']}, target {auto['target_ongoing_requests']:g} "
        f"ongoing/replica; delays up {auto['upscale_delay_s']:g}s, down {auto['downscale_delay_s']:g}s"
    )


def batch_summary(sizes: Sequence[int]) -> str:
    """Recent batch sizes in a few words: how full batches run is what tells whether batching pays."""
    if not sizes:
        return ""
    return f"{len(sizes)} batches: mean size {sum(sizes) / len(sizes):.1f}, largest {max(sizes)}, last {sizes[-1]}"


def _rate(per_s: float) -> str:
    return f"{per_s:.2f}" if per_s < 10 else f"{per_s:.1f}" if per_s < 100 else f"{per_s:.0f}"


def _ms(ms: float) -> str:
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.0f} s"


def request_summary(requests: RequestSummary | None) -> str:
    """A deployment's live figures in one line; ``IDLE`` when it served nothing in the window. The
    percentiles are estimates from latency buckets (``serve_nb.core.request_stats``), hence the ``~``."""
    if requests is None:
        return IDLE
    n = requests.errors
    errors = f"{n} error{'' if n == 1 else 's'} ({requests.error_rate:.1%})" if n else "no errors"
    return (f"{_rate(requests.requests_per_s)} req/s · p50 ~{_ms(requests.p50_ms)} · "
            f"p99 ~{_ms(requests.p99_ms)} · {errors}")


def filter_log_lines(lines: Sequence[str], request_id: str) -> list[str]:
    """The lines that contain ``request_id`` (surrounding blanks ignored; empty: every line). A line here is
    one log record as the replica wrote it (``LEVEL time Deployment replica request_id -- message``), so a
    record's own continuation lines stay with it."""
    wanted = request_id.strip()
    return [line for line in lines if wanted in line] if wanted else list(lines)


def log_text(lines: Sequence[str], request_id: str = "") -> str:
    """What the Logs tab shows: the last ``LOG_LINES`` lines that match ``request_id``, or why there are none."""
    if not lines:
        return "(no replica output yet)"
    shown = filter_log_lines(lines, request_id)
    if not shown:
        return f"(none of the last {len(lines)} lines carries request id {request_id.strip()!r})"
    return "\n".join(shown[-LOG_LINES:])


def models_cell(models: Sequence[str]) -> str:
    shown = ", ".join(models[:MODELS_SHOWN])
    return shown + (f" (+{len(models) - MODELS_SHOWN} more)" if len(models) > MODELS_SHOWN else "")


def deployment_row(dep: DeploymentDetail) -> DeploymentRow:
    return DeploymentRow(dep.name, dep.status, badge_color(dep.status), dep.running, dep.target,
                         dep.message.splitlines()[0] if dep.message else "", dep.autoscaling is not None,
                         batch_summary(dep.batch_sizes), request_summary(dep.requests))


def deleted_view(last: AppView | None, name: str, at: float, what: str = "deleted") -> AppView:
    """What the widget shows once its app is gone (``what``: "deleted", or "shut down" with all of Serve).

    It says so and when, offers no endpoint, and keeps what is still worth reading: the chart (its last
    value dropping to 0 at ``at``), the autoscaling panel (the decisions made while the app lived) and the
    replicas' log lines. Deployments and replicas are gone, so their tables are empty.
    """
    history = last.history + ((at, 0, 0.0),) if last is not None and last.history else ()
    return AppView(
        last.name if last is not None else name, DELETED, badge_color(DELETED),
        f"The application was {what} at {clock(at, at)}.", None, None, (), (),
        last.autoscaling if last is not None else (), chart_svg(history, at),
        last.logs if last is not None else "", last.log_lines if last is not None else (),
        last.ingress if last is not None else "", history, at,
    )


def autoscaling_note(view: AppView) -> str:
    """The line under the autoscaling panel's title: why it is empty, or that it is frozen at deletion."""
    if view.deleted_at is not None:
        return "As it was when the application was deleted." if view.autoscaling else ""
    return "" if view.autoscaling else NO_AUTOSCALING


def node_cell(replica: ReplicaDetail) -> str:
    """Where a replica runs: its node's IP when known (what a person can look up), else a short node id.

    A loopback address says only "this machine" (replicas listen there while every node is on one host), which
    cannot tell several local nodes apart: the short id does."""
    try:
        if replica.node_ip and not ipaddress.ip_address(replica.node_ip).is_loopback:
            return replica.node_ip
    except ValueError:  # a host name: show it as it is
        return replica.node_ip
    return replica.node_id[:NODE_ID_CHARS]


def app_view(detail: AppDetail | None, now: float, name: str = "") -> AppView:
    """Build what the application widget shows; ``None`` (deleted) gives a DELETED view (``deleted_view``
    keeps the previous view's chart and panels; this has none to keep)."""
    if detail is None:
        return deleted_view(None, name, now)
    url = endpoint_url(detail)
    replicas = tuple(
        ReplicaRow(d.name, r.replica_id, r.state, node_cell(r), str(r.pid or ""), r.ongoing,
                   f"since {clock(r.started_at, now)}", models_cell(r.models))
        for d in detail.deployments
        for r in d.replicas
    )
    autoscaling = tuple(
        AutoscalingView(
            d.name, _autoscaling_settings(d.autoscaling), d.last_decision or "no decision yet",
            tuple(f"{clock(e.time, now)}: {e.from_replicas} → {e.to_replicas} ({e.reason})"
                  for e in reversed(d.events[-RECENT_EVENTS:])),
        )
        for d in detail.deployments
        if d.autoscaling is not None
    )
    return AppView(
        detail.name, detail.status, badge_color(detail.status), detail.message, url,
        curl_line(url) if url else None, tuple(deployment_row(d) for d in detail.deployments), replicas,
        autoscaling, chart_svg(detail.history, now), "\n".join(detail.logs[-LOG_LINES:]), tuple(detail.logs),
        detail.ingress, tuple(detail.history),
    )


def chart_points(
    history: Sequence[tuple[float, int, float]], now: float, window_s: float = CHART_WINDOW_S,
    width: float = CHART_WIDTH, height: float = CHART_HEIGHT,
) -> tuple[list[tuple[float, float]], list[tuple[float, float]], float]:
    """Step-line points (x, y) for running replicas and ongoing requests over the last ``window_s``.

    Both series share one y scale (their max), returned third. The last value extends to ``now``.
    """
    start = now - window_s
    visible = [p for p in history if p[0] >= start]
    before = [p for p in history if p[0] < start]
    if before:
        visible.insert(0, (start, before[-1][1], before[-1][2]))
    if not visible:
        return [], [], 1.0
    top = max(1.0, max(max(p[1], p[2]) for p in visible))

    def x(t: float) -> float:
        return round((t - start) / window_s * width, 1)

    def y(v: float) -> float:
        return round(height - v / top * height, 1)

    def series(index: int) -> list[tuple[float, float]]:
        pts: list[tuple[float, float]] = []
        for i, p in enumerate(visible):
            if i:
                pts.append((x(p[0]), y(visible[i - 1][index])))  # step: hold the previous value
            pts.append((x(p[0]), y(p[index])))
        pts.append((x(now), y(visible[-1][index])))
        return pts

    return series(1), series(2), top


def chart_svg(history: Sequence[tuple[float, int, float]], now: float, window_s: float = CHART_WINDOW_S) -> str:
    """An inline SVG: replicas (blue) and ongoing requests (orange) over the last ``window_s``."""
    width, height = CHART_WIDTH, CHART_HEIGHT
    replicas, ongoing, top = chart_points(history, now, window_s, width, height)

    def poly(points: list[tuple[float, float]], color: str) -> str:
        if not points:
            return ""
        coords = " ".join(f"{px},{py}" for px, py in points)
        return f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{coords}"/>'

    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 40:g}" height="{height + 24:g}" '
        f'viewBox="-30 -6 {width + 40:g} {height + 24:g}" style="font: 10px sans-serif">'
        f'<rect x="0" y="0" width="{width:g}" height="{height:g}" fill="#f6f8fa" stroke="#d0d7de"/>'
        f'<text x="-4" y="8" text-anchor="end">{top:g}</text><text x="-4" y="{height:g}" text-anchor="end">0</text>'
        f'{poly(ongoing, "#fb8500")}{poly(replicas, "#0969da")}'
        f'<text x="0" y="{height + 14:g}" fill="#0969da">replicas</text>'
        f'<text x="60" y="{height + 14:g}" fill="#fb8500">ongoing requests</text>'
        f'<text x="{width:g}" y="{height + 14:g}" text-anchor="end">last {window_s / 60:g} min</text></svg>'
    )


def dashboard_rows(apps: dict[str, ApplicationStatusInfo]) -> list[DashboardRow]:
    """One row per application, sorted by name."""
    rows = []
    for name in sorted(apps):
        app = apps[name]
        running = sum(d.replica_states.get("RUNNING", 0) for d in app.deployments.values())
        target = sum(d.target_replicas for d in app.deployments.values())
        requests = tuple(f"{d.name}: {request_summary(d.requests)}" for d in app.deployments.values())
        rows.append(DashboardRow(name, str(app.status), badge_color(str(app.status)), app.route_prefix or "(no HTTP)",
                                 f"{running} / {target} replicas", requests))
    return rows


def escape(text: str) -> str:
    return html.escape(text, quote=True)


def format_response(status: int, body: bytes, latency_s: float, content_type: str = "") -> str:
    """The request panel's answer line and body (pretty JSON when it is JSON)."""
    text = body.decode("utf-8", errors="replace")
    if "json" in content_type:
        try:
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            pass
    if len(text) > RESPONSE_PREVIEW_CHARS:
        text = text[:RESPONSE_PREVIEW_CHARS] + f"\n... ({len(body)} bytes)"
    return f"{status} in {latency_s * 1000:.1f} ms\n{text}"
