"""The dashboard widget, fed by hand (no Ray): one row per application, a row expands to that application's live
data (drawn by the dashboard's own front end), and the page's commands in an expanded row reach its application
widget; a removed application's row and widget go."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("anywidget")

import serve_nb  # noqa: E402
from helpers import wait_until  # noqa: E402
from serve_nb.notebook.payload import app_payload  # noqa: E402
from serve_nb.notebook.views import app_view  # noqa: E402
from serve_nb.notebook.widgets import Dashboard  # noqa: E402
from serve_nb.types import (AppDetail, ApplicationStatus, ApplicationStatusInfo, DeploymentDetail,  # noqa: E402
                            DeploymentStatus, DeploymentStatusInfo, ServeStatus)


def status(*names: str) -> ServeStatus:
    return ServeStatus(applications={
        name: ApplicationStatusInfo(name, ApplicationStatus.RUNNING, route_prefix=f"/{name}", deployments={
            "D": DeploymentStatusInfo("D", DeploymentStatus.HEALTHY, replica_states={"RUNNING": 1}, target_replicas=1)})
        for name in names})


def detail(name: str) -> AppDetail:
    return AppDetail(name, "RUNNING", "", f"/{name}", "D", "127.0.0.1:8000", (DeploymentDetail("D", "HEALTHY", "", 1, 1),))


def test_rows_expand_to_the_apps_data_and_commands_reach_its_widget(monkeypatch):
    calls: list[tuple[str, str, int]] = []
    lock = threading.Lock()

    def scale_deployment(app: str, deployment: str, n: int) -> None:
        with lock:
            calls.append((app, deployment, n))

    monkeypatch.setattr(serve_nb, "scale_deployment", scale_deployment)
    board = Dashboard()
    try:
        assert not board.running  # no Serve here: the page says how to start it
        board._on_status(status("b", "a"))
        assert board.app_names == ["a", "b"] and [r["replicas"] for r in board.rows] == ["1 / 1 replicas"] * 2
        app = board.expand("a")
        app._on_detail(detail("a"))
        assert board.expanded == ["a"] and board.details["a"]["data"]["name"] == "a"
        assert board.details["a"]["scale_target"] == "D"
        board._on_msg(board, {"app": "a", "cmd": "scale", "step": 1}, [])
        wait_until(lambda: calls == [("a", "D", 2)], what="+ in the expanded row to scale a's D")
        board._on_msg(board, {"app": "a", "cmd": "set", "name": "log_filter", "value": "req-1"}, [])
        assert app.log_filter == "req-1"
        board._on_status(status("b"))
        assert board.app_names == ["b"] and "a" not in board.details and board.expanded == []
        assert app.comm is None  # its widget was closed with its row
        with pytest.raises(KeyError, match="No application 'zzz'"):
            board.expand("zzz")
    finally:
        board.close()


def test_the_payload_links_the_ray_dashboard_only_when_one_runs():
    view = app_view(detail("a"), 100.0)
    assert app_payload(view, 100.0)["dashboard_url"] is None
    assert app_payload(view, 100.0, dashboard_url="http://127.0.0.1:8265")["dashboard_url"] == "http://127.0.0.1:8265"
