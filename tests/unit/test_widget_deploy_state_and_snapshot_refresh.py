"""What the app widget shows of a deploy (stages, failure, Retry), and how often it refreshes the snapshot a saved
notebook keeps (no Ray: hand-made DeployStates, a fake clock)."""

from __future__ import annotations

import pytest

pytest.importorskip("anywidget")

from serve_nb.notebook.deploy_state import DeployFailure, DeployState, StageState  # noqa: E402
from serve_nb.notebook.widget_base import Throttle  # noqa: E402
from serve_nb.notebook.widgets import AppWidget  # noqa: E402


@pytest.fixture
def widget():
    shown = AppWidget("shop")
    yield shown
    shown.close()


def test_the_stages_show_with_their_state_icons_in_order(widget):
    state = (DeployState().with_stage("code shipped", StageState.DONE)
             .with_stage("replicas starting", StageState.ACTIVE, "1/2").with_stage("routing switched", StageState.PENDING))
    widget.set_deploy_state(state)
    assert widget.deploy_state is state
    assert [(s["icon"], s["label"], s["detail"]) for s in widget.deploy["stages"]] == [
        ("✓", "code shipped", ""), ("◐", "replicas starting", "1/2"), ("○", "routing switched", "")]
    assert widget.deploy["failure"] is None
    assert "◐ replicas starting 1/2" in widget.snapshot_html()
    widget.set_deploy_state(None)
    assert widget.deploy == {} and widget.deploy_state is None


def test_a_failure_carries_the_error_as_given_the_log_lines_and_retry_calls_the_callback(widget):
    error = "Cell In[4], line 2\n    1/0\nZeroDivisionError: division by zero"
    state = DeployState((), DeployFailure(error, ("ERROR boom",), kept=True, note="The version before keeps serving."))
    widget.set_deploy_state(state.with_stage("replicas starting", StageState.FAILED))
    assert widget.deploy["failure"] == {"error": error, "log_lines": ["ERROR boom"], "kept": True,
                                        "note": "The version before keeps serving."}
    assert widget.deploy["stages"][0]["icon"] == "✗"
    assert not widget.can_retry
    widget.handle_command({"cmd": "retry"})
    assert widget.notice == "Nothing to retry: re-run the cell."
    calls: list[int] = []
    widget.set_retry(lambda: calls.append(1))
    assert widget.can_retry
    widget.handle_command({"cmd": "retry"})
    assert calls == [1]

    def fails() -> None:
        raise RuntimeError("still broken")

    widget.set_retry(fails)
    widget.handle_command({"cmd": "retry"})
    assert widget.notice == "Retry failed: still broken"


class FakeTimers:
    def __init__(self) -> None:
        self.now = 0.0
        self.pending: list[tuple[float, object]] = []

    def schedule(self, delay: float, action) -> None:  # noqa: ANN001
        self.pending.append((self.now + delay, action))

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [a for t, a in self.pending if t <= self.now]
        self.pending = [(t, a) for t, a in self.pending if t > self.now]
        for action in due:
            action()


def test_the_snapshot_is_sent_at_most_once_per_interval_and_the_latest_value_always_arrives():
    timers = FakeTimers()
    sent: list[str] = []
    throttle = Throttle(sent.append, 2.0, clock=lambda: timers.now, schedule=timers.schedule)
    throttle("a")
    assert sent == ["a"]  # the first at once
    for value in ("b", "c", "d"):
        timers.advance(0.5)
        throttle(value)
    assert sent == ["a"]
    timers.advance(0.5)  # 2 s after "a": the latest pending one
    assert sent == ["a", "d"]
    timers.advance(5.0)
    throttle("e")
    assert sent == ["a", "d", "e"]
    throttle("f")
    throttle.flush()  # a final state (deleted, shut down) does not wait
    assert sent[-1] == "f"
    throttle.stop()
    timers.advance(10.0)
    throttle("g")
    assert sent[-1] == "f"


def test_the_widgets_output_is_the_live_view_and_the_snapshot_next_to_it(widget, monkeypatch):
    shown: list[tuple[dict, dict]] = []
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False, **kw: shown.append((obj, kw)))
    widget._ipython_display_()
    (live, _), (snap, kw) = shown
    assert "application/vnd.jupyter.widget-view+json" in live and "snapshot" not in live["text/html"]
    assert kw == {"display_id": widget.snapshot_id}
    assert f'data-serve-nb-snapshot="{widget.snapshot_id}"' in snap["text/html"]
    assert widget._repr_mimebundle_()[0]["text/html"].startswith("<div data-serve-nb-snapshot")


class Info:
    def __init__(self, cell_id):  # noqa: ANN001
        self.cell_id = cell_id


def test_rerunning_a_cell_stops_refreshing_its_old_snapshot_whose_output_is_cleared():
    from serve_nb.notebook.widget_base import _CellSnapshots

    cells = _CellSnapshots()
    cells._hook = lambda: None  # no IPython shell here: the events are driven by hand
    sent: list[str] = []
    cells.pre_run_cell(Info("cell-a"))
    old = Throttle(sent.append, 0.0)
    cells.bind(old)
    cells.pre_run_cell(Info("cell-b"))  # another cell: the snapshot keeps following
    old("later")
    assert sent == ["later"]
    cells.pre_run_cell(Info("cell-a"))  # its own cell again: its output is cleared
    old("stale")
    assert sent == ["later"]


def test_without_cell_ids_a_snapshot_is_refreshed_until_the_next_cell_starts():
    from serve_nb.notebook.widget_base import _CellSnapshots

    cells = _CellSnapshots()
    cells._hook = lambda: None
    sent: list[str] = []
    cells.pre_run_cell(Info(None))
    throttle = Throttle(sent.append, 0.0)
    cells.bind(throttle)
    throttle("own cell")
    cells.pre_run_cell(Info(None))
    throttle("next cell")
    assert sent == ["own cell"]
