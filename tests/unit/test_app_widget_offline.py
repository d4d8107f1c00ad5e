"""The app widget's wiring, fed by hand (no Ray: the widget's feed is inactive): the deployments table shows the
live request figures, and the Logs tab's request-id box filters the lines as they are and as they come."""

from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets")

from serve_nb.notebook.widgets import AppWidget  # noqa: E402
from serve_nb.types import AppDetail, DeploymentDetail, RequestSummary  # noqa: E402

FIRST = "INFO 2025-01-01 12:00:01,001 Model ab12cd req-1 -- CALL __call__ OK 3.1ms"
SECOND = "ERROR 2025-01-01 12:00:02,002 Model ab12cd req-2 -- CALL __call__ ERROR 4.0ms"
THIRD = "INFO 2025-01-01 12:00:03,003 Model ab12cd req-1 -- done"


def detail(*logs: str, requests: RequestSummary | None = None) -> AppDetail:
    return AppDetail("shop", "RUNNING", "", None, "Model", None,
                     (DeploymentDetail("Model", "HEALTHY", "", 1, 1, requests=requests),), (), logs)


def test_the_logs_tab_shows_only_the_typed_request_ids_lines_and_keeps_filtering_new_ones():
    widget = AppWidget("shop")
    try:
        assert not widget.listening
        widget._on_detail(detail(FIRST, SECOND))
        assert widget._logs.value == f"{FIRST}\n{SECOND}"
        widget._log_filter.value = "req-1"
        assert widget._logs.value == FIRST
        widget._on_detail(detail(FIRST, SECOND, THIRD))
        assert widget._logs.value == f"{FIRST}\n{THIRD}"
        widget._log_filter.value = ""
        assert widget._logs.value == f"{FIRST}\n{SECOND}\n{THIRD}"
    finally:
        widget.close()


def test_the_deployments_table_shows_the_live_figures_then_idle():
    widget = AppWidget("shop")
    try:
        figures = RequestSummary(10, 0.5, 3.5, 9.9, 1, 0.1, 20.0)
        widget._on_detail(detail(requests=figures))
        assert "0.50 req/s · p50 ~3.5 ms · p99 ~9.9 ms · 1 error (10.0%)" in widget._deployments.value
        widget._on_detail(detail(requests=None))
        assert "req/s" not in widget._deployments.value and ">idle<" in widget._deployments.value
    finally:
        widget.close()
