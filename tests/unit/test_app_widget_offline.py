"""The app widget's wiring, fed by hand (no Ray: the widget's feed is inactive): the deployments table shows the
live request figures, the Logs tab's request-id box filters the lines as they are and as they come, + and − act on
a deployment without one being picked by hand, and a deleted app's widget says so and offers no controls."""

from __future__ import annotations

import dataclasses
import threading
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("ipywidgets")

import serve_nb  # noqa: E402
from helpers import wait_until  # noqa: E402
from serve_nb.config import AutoscalingConfig  # noqa: E402
from serve_nb.notebook.views import NO_AUTOSCALING  # noqa: E402
from serve_nb.notebook.widgets import AppWidget  # noqa: E402
from serve_nb.types import AppDetail, DeploymentDetail, RequestSummary, ScalingEvent  # noqa: E402

SVG = "{http://www.w3.org/2000/svg}"
AUTO = dataclasses.asdict(AutoscalingConfig(min_replicas=1, max_replicas=4))

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


def app_of(*deployments: DeploymentDetail, ingress: str = "Ingress") -> AppDetail:
    return AppDetail("shop", "RUNNING", "", "/shop", ingress, "127.0.0.1:8000", deployments,
                     ((10.0, 1, 0.0), (20.0, 2, 3.0)))


@pytest.fixture
def scaled(monkeypatch):
    """What the + and − buttons asked ``serve.scale_deployment`` for (they call it on a thread)."""
    calls: list[tuple[str, str, int]] = []
    lock = threading.Lock()

    def scale_deployment(app: str, deployment: str, num_replicas: int) -> None:
        with lock:
            calls.append((app, deployment, num_replicas))

    monkeypatch.setattr(serve_nb, "scale_deployment", scale_deployment)
    return calls


def test_before_the_first_detail_no_control_can_act():
    widget = AppWidget("shop")
    try:
        assert widget._scale_target.value is None
        assert widget._plus.disabled and widget._minus.disabled and widget._delete.disabled
        assert widget._send_button.disabled
    finally:
        widget.close()


def test_plus_and_minus_act_on_the_only_deployment_without_picking_it(scaled):
    widget = AppWidget("shop")
    try:
        widget._on_detail(app_of(DeploymentDetail("Model", "HEALTHY", "", 2, 2), ingress="Model"))
        assert widget._scale_target.options == ("Model",) and widget._scale_target.value == "Model"
        assert not widget._plus.disabled and not widget._minus.disabled
        widget._plus.click()
        wait_until(lambda: scaled == [("shop", "Model", 3)], what="+ to scale Model to 3")
        widget._minus.click()
        wait_until(lambda: scaled[1:] == [("shop", "Model", 1)], what="− to scale Model to 1")
    finally:
        widget.close()


def test_with_several_deployments_plus_acts_on_the_ingress_until_another_is_picked(scaled):
    def deployments(*names: str) -> AppDetail:
        return app_of(*(DeploymentDetail(n, "HEALTHY", "", 1, 1) for n in names))

    widget = AppWidget("shop")
    try:
        widget._on_detail(deployments("Model", "Ingress", "Tokenizer"))
        assert widget._scale_target.value == "Ingress"
        widget._plus.click()
        wait_until(lambda: scaled == [("shop", "Ingress", 2)], what="+ to scale the ingress")
        widget._scale_target.value = "Tokenizer"
        widget._on_detail(deployments("Model", "Ingress", "Tokenizer", "Cache"))
        assert widget._scale_target.options == ("Model", "Ingress", "Tokenizer", "Cache")
        assert widget._scale_target.value == "Tokenizer"  # an update, even one adding a deployment, keeps the pick
        widget._on_detail(deployments("Model", "Ingress"))
        assert widget._scale_target.value == "Ingress"  # the pick was removed: back to the ingress
    finally:
        widget.close()


def test_when_every_deployment_autoscales_plus_and_minus_are_disabled():
    widget = AppWidget("shop")
    try:
        widget._on_detail(app_of(DeploymentDetail("Ingress", "HEALTHY", "", 2, 2, autoscaling=AUTO)))
        assert widget._scale_target.value is None and widget._plus.disabled and widget._minus.disabled
        assert not widget._delete.disabled and not widget._send_button.disabled
    finally:
        widget.close()


def test_a_deleted_apps_widget_says_when_disables_its_controls_and_keeps_chart_and_autoscaling_panel():
    widget = AppWidget("shop")
    try:
        widget._on_detail(app_of(DeploymentDetail("Ingress", "HEALTHY", "", 2, 2, autoscaling=AUTO,
                                                  last_decision="steady at 2",
                                                  events=(ScalingEvent(15.0, 1, 2, "3 ongoing"),)),
                                 DeploymentDetail("Model", "HEALTHY", "", 1, 1)))
        widget._ask_delete()
        assert not widget._plus.disabled and widget._confirm.layout.display == "flex"
        widget._on_detail(None)  # the feed's word that the app was deleted
        assert "DELETED" in widget._header.value and "The application was deleted at " in widget._header.value
        assert "0 / 0" not in widget._header.value + widget._deployments.value
        assert all(w.disabled for w in (widget._scale_target, widget._plus, widget._minus, widget._delete,
                                        widget._send_button))
        assert widget._confirm.layout.display == "none"  # no "Really delete?" left for an app that is gone
        assert len(ET.fromstring(widget._chart.value).findall(f"{SVG}polyline")) == 2
        assert NO_AUTOSCALING not in widget._autoscaling.value and "steady at 2" in widget._autoscaling.value
        assert not widget.listening
    finally:
        widget.close()


def test_the_widgets_parts_carry_the_css_classes_a_browser_finds_them_by():
    widget = AppWidget("shop")
    try:
        assert "serve-nb-app" in widget._dom_classes
        for part, css in ((widget._header, "serve-nb-status"), (widget._plus, "serve-nb-scale-up"),
                          (widget._minus, "serve-nb-scale-down"), (widget._deployments, "serve-nb-deployments"),
                          (widget._notice, "serve-nb-notice")):
            assert css in part._dom_classes
        assert widget.layout.width == "100%" and widget.layout.overflow == "hidden"
        assert widget._curl.layout.width == "100%" and widget._curl.layout.margin == "2px 0px"
    finally:
        widget.close()
