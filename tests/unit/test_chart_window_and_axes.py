"""The autoscaling chart follows the activity and gives replicas and load their own axes (pure, no widgets)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from serve_nb.notebook.chart import (MIN_WINDOW_S, ChartEvent, ChartWindow, EventKind, chart_svg, nice_ticks,
                                     window_start)

SVG = "{http://www.w3.org/2000/svg}"
BURST = ((1000.0, 1, 0.0), (1003.0, 2, 12.0), (1008.0, 4, 12.0), (1010.0, 4, 0.0))


def test_by_default_the_window_spans_the_activity_not_a_fixed_five_minutes():
    assert window_start(BURST, 1010.0) == 1010.0 - MIN_WINDOW_S  # a 10 s burst: a 30 s window, not 300 s
    long = ((0.0, 1, 0.0), (500.0, 2, 1.0))
    assert window_start(long, 600.0) == 0.0  # all of a long history
    assert window_start(long, 600.0, ChartWindow.M1) == 540.0
    assert window_start((), 600.0) == 600.0 - MIN_WINDOW_S


@pytest.mark.parametrize("top, ticks", [(4, [0, 1, 2, 3, 4]), (12, [0, 5, 10, 15]), (1, [0, 1]),
                                        (0.3, [0, 1]), (100, [0, 50, 100])])
def test_ticks_are_round_numbers_reaching_the_top(top, ticks):
    assert nice_ticks(top) == ticks


def test_replicas_and_load_have_separate_axes_so_four_replicas_are_not_flat_next_to_twelve_requests():
    root = ET.fromstring(chart_svg(BURST, 1010.0))
    left = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "axis-left"]
    right = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "axis-right"]
    assert left == ["0", "1", "2", "3", "4"] and right == ["0", "5", "10", "15"]
    replicas, load = ([p for p in root.iter(f"{SVG}polyline") if p.get("stroke") == c] for c in ("#0969da", "#fb8500"))
    ys = {float(pt.split(",")[1]) for pt in replicas[0].get("points").split()}
    assert len(ys) == 3  # 1, 2 and 4 replicas at three heights
    assert max(ys) - min(ys) > 50  # spread over most of the plot's height
    assert load


def test_events_are_vertical_markers_with_their_text_inside_the_window_only():
    events = (ChartEvent(1003.0, EventKind.SCALE, "Model: 1 → 2 (12 ongoing)"),
              ChartEvent(1.0, EventKind.ROLLOUT, "too old"))
    root = ET.fromstring(chart_svg(BURST, 1010.0, events))
    markers = [line for line in root.iter(f"{SVG}line") if line.find(f"{SVG}title") is not None]
    assert [m.find(f"{SVG}title").text for m in markers] == ["Model: 1 → 2 (12 ongoing)"]


def test_an_empty_history_still_draws_axes():
    root = ET.fromstring(chart_svg((), 100.0))
    assert root.findall(f"{SVG}polyline") == []
    assert any(t.get("class") == "axis-time" for t in root.iter(f"{SVG}text"))
