"""The autoscaling chart's geometry, shared by the static snapshot (SVG here) and the live front end (which draws
the same thing in JavaScript from the same data): which time window to show, and "nice" axis ticks.

The window follows the activity: by default it spans from the first recorded point to now (at least
``MIN_WINDOW_S``), so a ten-second burst fills the chart instead of a few pixels of a fixed five minutes.
Replicas and ongoing requests get separate y axes (left and right): four replicas next to twelve requests
would otherwise draw the replica line flat. Pure: no Ray, no widgets.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Sequence

from serve_nb.notebook.views import escape

MIN_WINDOW_S = 30.0
WIDTH, HEIGHT = 520.0, 140.0
LEFT, RIGHT, TOP, BOTTOM = 34.0, 40.0, 8.0, 34.0  # margins for the axes' labels and the legend
REPLICA_COLOR, LOAD_COLOR = "#0969da", "#fb8500"


class ChartWindow(enum.Enum):
    """The window selector's choices; ACTIVITY (the default) spans the recorded history."""

    ACTIVITY = "activity"
    M1 = "1m"
    M5 = "5m"
    M15 = "15m"

    @property
    def seconds(self) -> float | None:
        return {"1m": 60.0, "5m": 300.0, "15m": 900.0}.get(self.value)


class EventKind(enum.Enum):
    """What a vertical marker on the time line stands for."""

    SCALE = "scale"  # an autoscaling or manual scaling decision
    ROLLOUT = "rollout"  # the app started deploying or updating
    FAILURE = "failure"  # the app or a deployment failed


EVENT_COLORS = {EventKind.SCALE: "#8250df", EventKind.ROLLOUT: "#9a6700", EventKind.FAILURE: "#cf222e"}


@dataclass(frozen=True)
class ChartEvent:
    time: float
    kind: EventKind
    text: str


def window_start(history: Sequence[tuple[float, int, float]], now: float,
                 window: ChartWindow = ChartWindow.ACTIVITY) -> float:
    """Where the time axis starts: ``now`` minus the chosen window, or (ACTIVITY) the first recorded point."""
    fixed = window.seconds
    if fixed is not None:
        return now - fixed
    first = history[0][0] if history else now
    return min(first, now - MIN_WINDOW_S)


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """Round tick values from 0 to at least ``top`` (steps of 1, 2 or 5 times a power of ten)."""
    top = max(top, 1.0)
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    step = max(step, 1.0) if top <= count else step
    return [round(i * step, 6) for i in range(int(math.ceil(top / step - 1e-9)) + 1)]


def _fmt(v: float) -> str:
    return f"{v:g}"


def _clock(seconds_before_now: float) -> str:
    s = int(round(seconds_before_now))
    return "now" if s == 0 else f"-{s}s" if s < 120 else f"-{s // 60}m"


def chart_svg(history: Sequence[tuple[float, int, float]], now: float, events: Sequence[ChartEvent] = (),
              window: ChartWindow = ChartWindow.ACTIVITY) -> str:
    """An inline SVG with replicas (left axis, blue) and ongoing requests (right axis, orange) as step lines,
    ticks and labels on both axes and on time, and the events as vertical dashed markers."""
    start = window_start(history, now, window)
    span = max(now - start, 1e-6)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    before = [p for p in history if p[0] < start]
    visible = ([(start, before[-1][1], before[-1][2])] if before else []) + [p for p in history if p[0] >= start]
    rep_ticks = nice_ticks(max([p[1] for p in visible] + [1]))
    load_ticks = nice_ticks(max([p[2] for p in visible] + [1.0]))

    def x(t: float) -> float:
        return round(LEFT + (t - start) / span * plot_w, 1)

    def y(v: float, ticks: list[float]) -> float:
        return round(TOP + plot_h - v / ticks[-1] * plot_h, 1)

    def steps(index: int, ticks: list[float]) -> str:
        pts: list[str] = []
        for i, p in enumerate(visible):
            if i:
                pts.append(f"{x(p[0])},{y(visible[i - 1][index], ticks)}")
            pts.append(f"{x(p[0])},{y(p[index], ticks)}")
        if visible:
            pts.append(f"{x(now)},{y(visible[-1][index], ticks)}")
        return " ".join(pts)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="serve-nb-chart" width="{WIDTH:g}" height="{HEIGHT:g}" '
             f'viewBox="0 0 {WIDTH:g} {HEIGHT:g}" style="font:10px sans-serif;max-width:100%">',
             f'<rect x="{LEFT:g}" y="{TOP:g}" width="{plot_w:g}" height="{plot_h:g}" fill="#f6f8fa" stroke="#d0d7de"/>']
    for v in rep_ticks:
        parts.append(f'<text class="axis-left" x="{LEFT - 4:g}" y="{y(v, rep_ticks) + 3:g}" text-anchor="end" '
                     f'fill="{REPLICA_COLOR}">{_fmt(v)}</text>')
    for v in load_ticks:
        parts.append(f'<text class="axis-right" x="{WIDTH - RIGHT + 4:g}" y="{y(v, load_ticks) + 3:g}" '
                     f'fill="{LOAD_COLOR}">{_fmt(v)}</text>')
    for i in range(5):
        t = start + span * i / 4
        parts.append(f'<text class="axis-time" x="{x(t):g}" y="{TOP + plot_h + 12:g}" text-anchor="middle">'
                     f'{_clock(now - t)}</text>')
    for event in events:
        if start <= event.time <= now:
            parts.append(f'<line x1="{x(event.time):g}" x2="{x(event.time):g}" y1="{TOP:g}" y2="{TOP + plot_h:g}" '
                         f'stroke="{EVENT_COLORS[event.kind]}" stroke-dasharray="3,2"><title>{escape(event.text)}'
                         f'</title></line>')
    if visible:
        parts.append(f'<polyline fill="none" stroke="{LOAD_COLOR}" stroke-width="2" points="{steps(2, load_ticks)}"/>')
        parts.append(f'<polyline fill="none" stroke="{REPLICA_COLOR}" stroke-width="2" '
                     f'points="{steps(1, rep_ticks)}"/>')
    legend_y = HEIGHT - 4
    parts.append(f'<text x="{LEFT:g}" y="{legend_y:g}" fill="{REPLICA_COLOR}">replicas (left)</text>'
                 f'<text x="{LEFT + 90:g}" y="{legend_y:g}" fill="{LOAD_COLOR}">ongoing requests (right)</text>'
                 f'<text x="{WIDTH - RIGHT:g}" y="{legend_y:g}" text-anchor="end">{_fmt(round(span))} s shown</text>'
                 "</svg>")
    return "".join(parts)
