"""Closing or replacing a widget closes every widget model it made: re-running a ``%%serve`` cell, or showing
``%serve_status`` again, twenty times leaves no more live models than once; ``%serve_shutdown`` leaves the cells'
widgets on show, saying so (no Ray: the feeds are inactive, Serve is faked where called)."""

from __future__ import annotations

from typing import Callable

import pytest

pytest.importorskip("anywidget")

from ipywidgets.widgets import widget as ipywidget_module  # noqa: E402
from IPython import get_ipython  # noqa: E402
from IPython.testing.globalipapp import start_ipython  # noqa: E402

from serve_nb.notebook.widgets import AppWidget, Dashboard  # noqa: E402
from serve_nb.types import (AppDetail, ApplicationStatus, ApplicationStatusInfo, DeploymentDetail,  # noqa: E402
                            DeploymentStatus, DeploymentStatusInfo, ServeStatus)

REPEATS = 20


def live_models() -> int:
    """Widget models the kernel holds (``Widget.widgets`` in ipywidgets 7; deprecated in 8 for this)."""
    return len(ipywidget_module._instances)


def growth(make_and_drop: Callable[[], None]) -> int:
    make_and_drop()  # the first round may create shared models (layout templates, ...) once
    before = live_models()
    for _ in range(REPEATS):
        make_and_drop()
    return live_models() - before


def detail() -> AppDetail:
    return AppDetail("shop", "RUNNING", "", "/shop", "Ingress", "127.0.0.1:8000",
                     (DeploymentDetail("Ingress", "HEALTHY", "", 1, 1), DeploymentDetail("Model", "HEALTHY", "", 2, 2)),
                     ((1.0, 1, 0.0),), ("a line",))


def status(*names: str) -> ServeStatus:
    return ServeStatus(applications={
        name: ApplicationStatusInfo(name, ApplicationStatus.RUNNING, route_prefix=f"/{name}", deployments={
            "D": DeploymentStatusInfo("D", DeploymentStatus.HEALTHY, replica_states={"RUNNING": 1}, target_replicas=1)})
        for name in names})


def test_a_closed_app_widget_leaves_no_live_model_behind():
    def cycle() -> None:
        widget = AppWidget("shop")
        widget._on_detail(detail())
        widget.handle_command({"cmd": "scale", "step": 0})  # commands make no models
        widget.close()

    before = live_models()
    widget = AppWidget("counted")
    assert live_models() == before + 2  # the count is real: the widget and its layout register without a kernel
    widget.close()
    assert live_models() == before
    assert growth(cycle) == 0


def test_a_deleted_then_closed_app_widget_leaves_no_live_model_behind():
    def cycle() -> None:
        widget = AppWidget("shop")
        widget._on_detail(detail())
        widget._on_detail(None)
        widget.close()

    assert growth(cycle) == 0


def test_a_closed_dashboard_closes_its_rows_and_the_app_widgets_they_opened():
    def cycle() -> None:
        board = Dashboard()
        board._on_status(status("a", "b"))
        board.expand("a")._on_detail(detail())
        board._on_status(status("b"))  # "a" was deleted: its row goes
        board._on_status(status())
        board._on_status(status("c"))
        board.close()

    assert growth(cycle) == 0


def test_a_rows_removal_closes_the_row_while_the_dashboard_stays():
    board = Dashboard()
    try:
        board._on_status(status("x"))
        board.expand("x")
        before = live_models()
        for i in range(REPEATS):
            board._on_status(status(f"app{i}"))
            board.expand(f"app{i}")
        assert live_models() == before
    finally:
        board.close()


@pytest.fixture(scope="module")
def magics():
    shell = start_ipython() or get_ipython()  # one test shell per process: a second start returns None
    shell.run_line_magic("load_ext", "serve_nb")
    return shell.magics_manager.registry["ServeMagics"]


def test_rerunning_a_serve_cell_closes_the_widget_it_replaces(magics, capsys):
    magics._cell_id = "cell-1"

    def rerun() -> None:
        magics._widget(magics._cell_id, "shop", None)  # what %%serve does for a widget no longer following its app
        magics.widget_for("shop")._on_detail(detail())

    first = None
    try:
        magics._widget(magics._cell_id, "shop", None)
        first = magics.widget_for("shop")
        assert growth(rerun) == 0
        assert magics.widget_for("shop") is not first and first.comm is None  # the old one is closed
    finally:
        for widget in magics._widgets.values():
            widget.close()
        magics._widgets.clear()
        magics._cell_id = None
    capsys.readouterr()


def test_serve_shutdown_leaves_the_cells_widgets_on_show_saying_serve_was_shut_down(magics, monkeypatch, capsys):
    import serve_nb

    monkeypatch.setattr(serve_nb, "shutdown", lambda: None)
    magics._cell_id = "cell-2"
    try:
        magics._widget(magics._cell_id, "shop", None)
        widget = magics.widget_for("shop")
        widget._on_detail(detail())
        magics.shell.run_line_magic("serve_shutdown", "")
        assert widget.comm is not None  # still shown, for its chart and logs
        assert widget.data["message"].startswith("The application was shut down at ")
        assert widget.scale_target == "" and not widget.data["controls"]
        assert capsys.readouterr().out.endswith("serve_nb shut down.\n")
    finally:
        for shown in magics._widgets.values():
            shown.close()
        magics._widgets.clear()
        magics._cell_id = None
