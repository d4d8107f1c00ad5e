"""The app widget's wiring, fed by hand (no Ray: the widget's feed is inactive): the data it syncs to the page
carries the live request figures, the Logs tab's request-id filter applies to the lines as they are and as they
come, + and − (messages from the page) act on a deployment without one being picked by hand, the replica count
box sets a count, and a deleted app's widget says so and offers no controls."""

from __future__ import annotations

import dataclasses
import threading

import pytest

pytest.importorskip("anywidget")

import serve_nb  # noqa: E402
from helpers import wait_until  # noqa: E402
from serve_nb.config import AutoscalingConfig  # noqa: E402
from serve_nb.notebook.views import NO_AUTOSCALING  # noqa: E402
from serve_nb.notebook.widgets import AppWidget  # noqa: E402
from serve_nb.types import AppDetail, DeploymentDetail, RequestSummary, ScalingEvent  # noqa: E402

AUTO = dataclasses.asdict(AutoscalingConfig(min_replicas=1, max_replicas=4))

FIRST = "INFO 2025-01-01 12:00:01,001 Model ab12cd req-1 -- CALL __call__ OK 3.1ms"
SECOND = "ERROR 2025-01-01 12:00:02,002 Model ab12cd req-2 -- CALL __call__ ERROR 4.0ms"
THIRD = "INFO 2025-01-01 12:00:03,003 Model ab12cd req-1 -- done"


def detail(*logs: str, requests: RequestSummary | None = None) -> AppDetail:
    return AppDetail("shop", "RUNNING", "", None, "Model", None,
                     (DeploymentDetail("Model", "HEALTHY", "", 1, 1, requests=requests),), (), logs)


@pytest.fixture
def widget():
    shown = AppWidget("shop")
    yield shown
    shown.close()


def test_the_logs_tab_shows_only_the_typed_request_ids_lines_and_keeps_filtering_new_ones(widget):
    assert not widget.listening
    widget._on_detail(detail(FIRST, SECOND))
    assert widget.logs == f"{FIRST}\n{SECOND}"
    widget.log_filter = "req-1"  # as the page's filter box sets it
    assert widget.logs == FIRST
    widget._on_detail(detail(FIRST, SECOND, THIRD))
    assert widget.logs == f"{FIRST}\n{THIRD}"
    widget.log_filter = ""
    assert widget.logs == f"{FIRST}\n{SECOND}\n{THIRD}"


def test_the_deployments_data_carries_the_live_figures_then_idle(widget):
    figures = RequestSummary(10, 0.5, 3.5, 9.9, 1, 0.1, 20.0)
    widget._on_detail(detail(requests=figures))
    assert widget.data["deployments"][0]["requests"] == "0.50 req/s · p50 ~3.5 ms · p99 ~9.9 ms · 1 error (10.0%)"
    widget._on_detail(detail(requests=None))
    assert widget.data["deployments"][0]["requests"] == "idle"


def app_of(*deployments: DeploymentDetail, ingress: str = "Ingress") -> AppDetail:
    return AppDetail("shop", "RUNNING", "", "/shop", ingress, "127.0.0.1:8000", deployments,
                     ((10.0, 1, 0.0), (20.0, 2, 3.0)))


@pytest.fixture
def scaled(monkeypatch):
    """What the widget asked ``serve.scale_deployment`` for (it calls it on a thread)."""
    calls: list[tuple[str, str, int]] = []
    lock = threading.Lock()

    def scale_deployment(app: str, deployment: str, num_replicas: int) -> None:
        with lock:
            calls.append((app, deployment, num_replicas))

    monkeypatch.setattr(serve_nb, "scale_deployment", scale_deployment)
    return calls


def test_before_the_first_detail_no_control_can_act(widget, scaled):
    assert widget.scale_target == "" and widget.data == {}
    widget.handle_command({"cmd": "scale", "step": 1})
    assert "Nothing to scale" in widget.notice and scaled == []


def test_plus_and_minus_act_on_the_only_deployment_without_picking_it(widget, scaled):
    widget._on_detail(app_of(DeploymentDetail("Model", "HEALTHY", "", 2, 2), ingress="Model"))
    assert widget.data["scale_options"] == ["Model"] and widget.scale_target == "Model"
    widget.handle_command({"cmd": "scale", "step": 1})
    wait_until(lambda: scaled == [("shop", "Model", 3)], what="+ to scale Model to 3")
    widget.handle_command({"cmd": "scale", "step": -1})
    wait_until(lambda: scaled[1:] == [("shop", "Model", 1)], what="− to scale Model to 1")


def test_with_several_deployments_plus_acts_on_the_ingress_until_another_is_picked(widget, scaled):
    def deployments(*names: str) -> AppDetail:
        return app_of(*(DeploymentDetail(n, "HEALTHY", "", 1, 1) for n in names))

    widget._on_detail(deployments("Model", "Ingress", "Tokenizer"))
    assert widget.scale_target == "Ingress"
    widget.handle_command({"cmd": "scale", "step": 1})
    wait_until(lambda: scaled == [("shop", "Ingress", 2)], what="+ to scale the ingress")
    widget.scale_target = "Tokenizer"  # picked in the page
    widget._on_detail(deployments("Model", "Ingress", "Tokenizer", "Cache"))
    assert widget.data["scale_options"] == ["Model", "Ingress", "Tokenizer", "Cache"]
    assert widget.scale_target == "Tokenizer"  # an update, even one adding a deployment, keeps the pick
    widget._on_detail(deployments("Model", "Ingress"))
    assert widget.scale_target == "Ingress"  # the pick was removed: back to the ingress


def test_the_replica_count_box_sets_a_count_and_a_bad_one_is_explained(widget, scaled):
    widget._on_detail(app_of(DeploymentDetail("Ingress", "HEALTHY", "", 1, 1)))
    widget.handle_command({"cmd": "set_replicas", "deployment": "Ingress", "replicas": 4})
    wait_until(lambda: scaled == [("shop", "Ingress", 4)], what="the box to scale Ingress to 4")
    for bad in (0, -2, "two", None, True):
        widget.handle_command({"cmd": "set_replicas", "deployment": "Ingress", "replicas": bad})
        assert "at least one replica" in widget.notice
    widget.handle_command({"cmd": "set_replicas", "deployment": "Nope", "replicas": 2})
    assert "'Nope' cannot be scaled" in widget.notice
    assert scaled == [("shop", "Ingress", 4)]


def test_an_unknown_command_is_said_not_raised(widget):
    widget.handle_command({"cmd": "explode"})
    assert widget.notice == "Unknown command 'explode'."


def test_when_every_deployment_autoscales_plus_and_minus_have_nothing_to_act_on(widget):
    widget._on_detail(app_of(DeploymentDetail("Ingress", "HEALTHY", "", 2, 2, autoscaling=AUTO)))
    assert widget.scale_target == "" and widget.data["scale_options"] == []
    assert widget.data["controls"]  # delete and send still work
    assert widget.data["deployments"][0]["autoscaling_config"]["max_replicas"] == 4


def test_a_deleted_apps_widget_says_when_disables_its_controls_and_keeps_chart_and_autoscaling_panel(widget):
    widget._on_detail(app_of(DeploymentDetail("Ingress", "HEALTHY", "", 2, 2, autoscaling=AUTO,
                                              last_decision="steady at 2",
                                              events=(ScalingEvent(15.0, 1, 2, "3 ongoing"),)),
                             DeploymentDetail("Model", "HEALTHY", "", 1, 1)))
    assert widget.scale_target == "Model"
    widget._on_detail(None)  # the feed's word that the app was deleted
    data = widget.data
    assert data["status"] == "DELETED" and data["deleted"] and data["message"].startswith(
        "The application was deleted at ")
    assert data["deployments"] == [] and not data["controls"] and widget.scale_target == ""
    assert len(data["history"]) == 3 and data["history"][-1][1:] == [0, 0.0]  # kept, dropping to 0
    assert [e["kind"] for e in data["events"]] == ["scale"]
    assert NO_AUTOSCALING != data["autoscaling_note"] and data["autoscaling"][0]["last_decision"] == "steady at 2"
    widget.handle_command({"cmd": "delete"})
    assert widget.notice == "The application is already gone."
    assert not widget.listening


def test_the_widget_carries_the_css_class_a_browser_finds_it_by(widget):
    assert "serve-nb-app" in widget._dom_classes
    assert "serve-nb-scale-up" in widget._esm and "serve-nb-deployments" in widget._esm


def test_the_manual_adaptive_switch_sends_the_settings_and_explains_bad_ones(widget, monkeypatch):
    calls: list[tuple] = []
    lock = threading.Lock()

    def set_autoscaling(app: str, deployment: str, config: dict | None, replicas: int | None = None) -> None:
        with lock:
            calls.append((app, deployment, config, replicas))

    monkeypatch.setattr(serve_nb, "set_autoscaling", set_autoscaling)
    widget._on_detail(app_of(DeploymentDetail("Ingress", "HEALTHY", "", 2, 2, autoscaling=AUTO)))
    widget.handle_command({"cmd": "set_mode", "deployment": "Ingress", "adaptive": True, "min_replicas": 1,
                           "max_replicas": 6, "target_ongoing_requests": 4})
    wait_until(lambda: len(calls) == 1, what="Adaptive to reach serve.set_autoscaling")
    app, deployment, config, replicas = calls[0]
    assert (app, deployment, replicas) == ("shop", "Ingress", None)
    assert (config["min_replicas"], config["max_replicas"], config["target_ongoing_requests"]) == (1, 6, 4.0)
    assert config["upscale_delay_s"] == AUTO["upscale_delay_s"]  # the rest of its settings kept
    wait_until(lambda: widget.notice == "Ingress now autoscales (1–6 replicas).", what="the notice")
    widget.handle_command({"cmd": "set_mode", "deployment": "Ingress", "adaptive": False, "replicas": 3})
    wait_until(lambda: calls[1:] == [("shop", "Ingress", None, 3)], what="Manual to a fixed size of 3")
    widget.handle_command({"cmd": "set_mode", "deployment": "Ingress", "adaptive": True, "min_replicas": "x",
                           "max_replicas": 2, "target_ongoing_requests": 1})
    assert widget.notice.startswith("Adaptive needs whole min and max replicas")
    widget.handle_command({"cmd": "set_mode", "deployment": "Nope", "adaptive": False, "replicas": 1})
    assert "'Nope' cannot be changed here" in widget.notice
    assert len(calls) == 2


def test_an_unreachable_controller_is_said_over_the_last_state_until_it_answers_or_the_app_is_gone(widget):
    from serve_nb.exceptions import ControllerUnreachableError

    widget._on_detail(detail())
    shown = widget.data
    widget._on_controller(ControllerUnreachableError.STATE)  # what the controller watch calls it with
    assert widget.connection == "controller unreachable, retrying"
    assert widget.data == shown  # the last state stays, for reading
    widget._on_controller("")
    assert widget.connection == ""
    widget._on_controller(ControllerUnreachableError.STATE)
    widget._on_detail(None)  # deleted: nothing more to be reachable for
    assert widget.connection == ""
    assert "serve-nb-unreachable" in widget._esm
