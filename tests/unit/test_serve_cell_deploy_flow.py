"""%%serve's deploy as its widget shows it, with Serve and its feed faked (no Ray): a re-run updates the same
widget, whose stages move as the controller's app details come and reach done; a failing constructor leaves the
widget with "Cell In[N], line L", the replicas' last lines and Retry, removes a failed first deploy unless
--keep-failed, keeps a failed update's old version; live widget models stay flat over 20 re-runs."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable

import pytest

pytest.importorskip("ipywidgets")

from IPython import get_ipython  # noqa: E402
from IPython.core.error import UsageError  # noqa: E402
from IPython.testing.globalipapp import start_ipython  # noqa: E402
from ipywidgets.widgets import widget as ipywidget_module  # noqa: E402

import serve_nb  # noqa: E402
from helpers import wait_until  # noqa: E402
from serve_nb.exceptions import DeployError  # noqa: E402
from serve_nb.notebook.deploy_state import StageState  # noqa: E402
from serve_nb.types import (  # noqa: E402
    AppDetail, ApplicationStatus, ApplicationStatusInfo, DeploymentDetail, ReplicaDetail, ServeStatus,
)

CELL = "class Shop:\n    def __init__(self):\n        self.x = 1\n    def __call__(self, request=None):\n        return 'ok'\n"


class FakeFeed:
    """serve_nb.feed's subscribe/get: values pushed by the test reach every live subscription of their key."""

    def __init__(self) -> None:
        self.subs: dict[str, list[Callable[[Any], None]]] = {}
        self.values: dict[str, Any] = {}

    def subscribe(self, key: str, callback: Callable[[Any], None]) -> Any:
        self.subs.setdefault(key, []).append(callback)
        if key in self.values:
            callback(self.values[key])
        return SimpleNamespace(cancel=lambda: callback in self.subs[key] and self.subs[key].remove(callback))

    def get(self, key: str, timeout_s: float | None = None) -> Any:
        if key not in self.values:
            raise TimeoutError(key)
        return self.values[key]

    def push(self, key: str, value: Any) -> None:
        self.values[key] = value
        for callback in list(self.subs.get(key, ())):
            callback(value)


class FakeServe:
    """serve.run/status/delete and api.wait_for_app: ``during_wait`` runs while the cell waits, ``failure``
    (a function of the app name giving the controller's message) makes the deploy fail."""

    def __init__(self, feed: FakeFeed) -> None:
        self.feed = feed
        self.apps: dict[str, ApplicationStatusInfo] = {}
        self.runs: list[str] = []
        self.deleted: list[str] = []
        self.during_wait: Callable[[str], None] = lambda name: None
        self.failure: Callable[[str], str] | None = None

    def run(self, target: Any, name: str = "default", route_prefix: str | None = "/", _blocking: bool = True) -> Any:
        self.runs.append(name)
        old = self.apps.get(name)
        self.apps[name] = ApplicationStatusInfo(name, old.status if old else ApplicationStatus.DEPLOYING,
                                                last_deployed_time_s=float(len(self.runs)))
        self.feed.push(f"app:{name}", app_detail(name, "DEPLOYING", starting=1, at=len(self.runs)))
        return SimpleNamespace(app=name)

    def wait_for_app(self, name: str, prefix: str | None) -> None:
        self.during_wait(name)
        if self.failure is not None:
            message = self.failure(name)
            self.apps[name] = ApplicationStatusInfo(name, ApplicationStatus.DEPLOY_FAILED, message)
            self.feed.push(f"app:{name}", app_detail(name, "DEPLOY_FAILED", logs=("loading weights",),
                                                     at=len(self.runs)))
            raise DeployError(f"Application '{name}' failed to deploy. {message}")
        self.apps[name] = ApplicationStatusInfo(name, ApplicationStatus.RUNNING,
                                                last_deployed_time_s=float(len(self.runs)))
        self.feed.push(f"app:{name}", app_detail(name, "RUNNING", running=1, at=len(self.runs)))

    def status(self) -> ServeStatus:
        return ServeStatus(dict(self.apps))

    def delete(self, name: str, _blocking: bool = True) -> None:
        self.deleted.append(name)
        self.apps.pop(name, None)
        self.feed.push(f"app:{name}", None)
        del self.feed.values[f"app:{name}"]  # as the controller's feed: a removed key is not delivered again


def app_detail(name: str, status: str, running: int = 0, starting: int = 0, logs: tuple[str, ...] = (),
               at: float = 0.0) -> AppDetail:
    replicas = tuple(ReplicaDetail(f"r{i}", "RUNNING", "n", 1, 0.0, 0, "v") for i in range(running)) + tuple(
        ReplicaDetail(f"s{i}", "STARTING", "n", 1, 0.0, 0, "v") for i in range(starting))
    dep_status = "HEALTHY" if status == "RUNNING" else "UPDATING"
    return AppDetail(name, status, "", None, "Shop", None,
                     (DeploymentDetail("Shop", dep_status, "", 1, running, replicas, version="v"),), (), logs, at)


@pytest.fixture(scope="module")
def magics():
    shell = start_ipython() or get_ipython()  # one test shell per process: a second start returns None
    shell.run_line_magic("load_ext", "serve_nb")
    return shell.magics_manager.registry["ServeMagics"]


@pytest.fixture
def fake(magics, monkeypatch, capsys):
    feed = FakeFeed()
    serve = FakeServe(feed)
    for name in ("run", "status", "delete"):
        monkeypatch.setattr(serve_nb, name, getattr(serve, name))
    monkeypatch.setattr(serve_nb.api, "wait_for_app", serve.wait_for_app)
    monkeypatch.setattr(serve_nb.feed, "subscribe", feed.subscribe)
    monkeypatch.setattr(serve_nb.feed, "get", feed.get)
    yield serve
    for widget in magics._widgets.values():
        widget.close()
    magics._widgets.clear()
    capsys.readouterr()


def run_cell(magics, line: str, cell: str = CELL, cell_id: str = "cell-1") -> None:
    magics.pre_run_cell(SimpleNamespace(cell_id=cell_id))  # as IPython does before each cell
    magics.shell.execution_count += 1
    magics.serve_cell(line, cell)


def test_a_rerun_updates_the_same_widget_whose_stages_reach_done_and_live_models_stay_flat(magics, fake):
    run_cell(magics, "--name shop")
    widget = magics.widget_for("shop")
    assert widget.listening and widget.deploy_state.finished
    assert {s.state for s in widget.deploy_state.stages} == {StageState.DONE}
    assert widget.ingress is magics.shell.user_ns["Shop"]
    run_cell(magics, "--name shop")
    before = len(ipywidget_module._instances)
    for _ in range(20):
        run_cell(magics, "--name shop")
        assert magics.widget_for("shop") is widget
    assert len(ipywidget_module._instances) == before
    assert widget.deploy_state.finished and not widget.deploy_state.failed
    run_cell(magics, "--name other-shop")  # the cell now names another app: a new widget in its place
    assert magics.widget_for("other-shop") is not widget and widget.comm is None  # the old tree is closed


def test_the_stage_list_moves_while_the_cell_waits(magics, fake):
    run_cell(magics, "--name shop")
    widget = magics.widget_for("shop")
    seen: list[list[tuple[str, str, str]]] = []

    def rollout(name: str) -> None:
        at = len(fake.runs)  # the details of this deploy (the feed still holds the last run's RUNNING one)
        for value in (app_detail(name, "DEPLOYING", starting=1, at=at), app_detail(name, "DEPLOYING", running=1, at=at)):
            fake.feed.push(f"app:{name}", value)
            seen.append([(s.label, s.state.value, s.detail) for s in widget.deploy_state.stages])

    fake.during_wait = rollout
    run_cell(magics, "--name shop")
    assert seen == [
        [("code shipped", "done", ""), ("replicas starting", "active", "0/1"), ("health checks", "pending", ""),
         ("routing switched", "pending", "")],
        [("code shipped", "done", ""), ("replicas starting", "done", "1/1"), ("health checks", "active", ""),
         ("routing switched", "pending", "")],
    ]
    assert [s.state for s in widget.deploy_state.stages] == [StageState.DONE] * 4


def broken_cell_message(magics) -> Callable[[str], str]:
    def message(name: str) -> str:
        filename = magics.shell.user_ns["Shop"].__init__.__code__.co_filename
        return ("Deployment 'Shop' failed to deploy:\nThe replica constructor failed 3 times. Last error:\n"
                f'Traceback (most recent call last):\n  File "{filename}", line 3, in __init__\n'
                "RuntimeError: weights not found")
    return message


def test_a_failed_first_deploy_keeps_its_widget_with_the_cell_line_and_is_removed(magics, fake):
    fake.failure = broken_cell_message(magics)
    with pytest.raises(UsageError) as info:
        run_cell(magics, "--name shop")
    assert "RuntimeError: weights not found" in str(info.value) and "Traceback" not in str(info.value)
    widget = magics.widget_for("shop")
    failure = widget.deploy_state.failure
    count = magics.shell.execution_count
    assert f"Cell In[{count}], line 3, in __init__" in failure.error
    assert "---->" in failure.error and "self.x = 1" in failure.error
    assert failure.log_lines == ("loading weights",) and not failure.kept
    assert fake.deleted == ["shop"] and "shop" not in fake.status().applications

    fake.failure = None  # what the constructor needed is there now: Retry deploys again
    widget.handle_command({"cmd": "retry"})  # what the page's Retry button sends
    wait_until(lambda: "shop" in fake.apps and fake.apps["shop"].status == "RUNNING", what="redeployed by Retry")
    retried = magics.widget_for("shop")  # the failed app was removed: a new widget took the old one's place
    wait_until(lambda: retried.deploy_state is not None and retried.deploy_state.finished
               and not retried.deploy_state.failed, what="Retry's stages done")
    assert fake.runs == ["shop", "shop"]


def test_keep_failed_leaves_the_failed_app_and_a_failed_update_keeps_the_old_version(magics, fake):
    fake.failure = broken_cell_message(magics)
    with pytest.raises(UsageError):
        run_cell(magics, "--name kept --keep-failed")
    assert fake.deleted == [] and fake.apps["kept"].status == ApplicationStatus.DEPLOY_FAILED
    assert magics.widget_for("kept").deploy_state.failure.kept

    fake.failure = None
    run_cell(magics, "--name live", cell_id="cell-2")
    fake.failure = broken_cell_message(magics)
    with pytest.raises(UsageError):
        run_cell(magics, "--name live", cell_id="cell-2")
    failure = magics.widget_for("live").deploy_state.failure
    assert "live" not in fake.deleted and failure.kept and "keeps serving" in failure.note


def test_a_no_wait_deploy_is_ended_by_the_feed_when_the_app_runs(magics, fake):
    run_cell(magics, "--name later --no-wait")
    widget = magics.widget_for("later")
    assert not widget.deploy_state.finished  # the cell returned; the deploy goes on
    at = len(fake.runs)
    fake.feed.push("app:later", app_detail("later", "DEPLOYING", starting=1, at=at))
    assert widget.deploy_state.stages[1].detail == "0/1" and not widget.deploy_state.finished
    fake.feed.push("app:later", app_detail("later", "RUNNING", running=1, at=at))
    assert widget.deploy_state.finished and not widget.deploy_state.failed
    assert len(fake.feed.subs["app:later"]) == 1  # the deploy's watch stopped: only the widget's own follows
