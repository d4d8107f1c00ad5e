"""%%serve's deploy as it happens, with a real controller (IPython shell in-process): a re-run updates the same
widget and its stages reach done; a failing constructor leaves the widget with "Cell In[N], line L" and the
replica's printed lines, and no app (or a DEPLOY_FAILED one with --keep-failed); Retry redeploys once what the
constructor needed is there; a failed update keeps the old version serving; Delete removes a kept app."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from IPython import get_ipython
from IPython.core.error import UsageError
from IPython.testing.globalipapp import start_ipython
from ipywidgets.widgets import widget as ipywidget_module

import serve_nb as serve
from helpers import wait_until
from serve_nb.notebook.deploy_state import StageState

NEEDS_FILE = (
    "import os\n"
    "class {name}:\n"
    "    def __init__(self, path={path!r}):\n"
    "        print('looking for', path)\n"
    "        open(path).close()\n"
    "    def __call__(self, request=None):\n"
    "        return 'ok'\n"
)


@pytest.fixture(scope="module")
def magics(ray_session):
    shell = start_ipython() or get_ipython()  # one test shell per process: a second start returns None
    shell.run_line_magic("load_ext", "serve_nb")
    return shell.magics_manager.registry["ServeMagics"]


def run_cell(magics, line: str, cell: str, cell_id: str) -> None:
    magics.pre_run_cell(SimpleNamespace(cell_id=cell_id))  # as IPython does before each cell
    magics.shell.execution_count += 1
    magics.serve_cell(line, cell)


def test_a_rerun_updates_the_same_widget_and_twenty_reruns_keep_live_models_flat(magics, serve_instance, capsys):
    cell = "class Flow:\n    def __call__(self, request=None):\n        return '{}'\n"
    run_cell(magics, "--name flow --no-http", cell.format("v1"), "flow-cell")
    widget = serve.widgets.widget_for("flow")
    run_cell(magics, "--name flow --no-http", cell.format("v2"), "flow-cell")  # new code: a rolling update
    assert serve.widgets.widget_for("flow") is widget and widget.listening
    assert [s.label for s in widget.deploy_state.stages] == [
        "code shipped", "replicas starting", "health checks", "routing switched"]
    assert {s.state for s in widget.deploy_state.stages} == {StageState.DONE} and widget.deploy_state.finished
    assert widget.deploy_state.stages[1].detail == "1/1"
    assert serve.get_app_handle("flow").remote().result() == "v2"
    before = len(ipywidget_module._instances)
    for i in range(20):
        run_cell(magics, "--name flow --no-http", cell.format("v2"), "flow-cell")
        assert serve.widgets.widget_for("flow") is widget
    assert len(ipywidget_module._instances) == before
    capsys.readouterr()


def test_a_failed_first_deploy_shows_the_cell_line_and_leaves_no_app_and_retry_redeploys(magics, serve_instance,
                                                                                        tmp_path, capsys):
    needed = tmp_path / "weights.bin"
    with pytest.raises(UsageError) as info:
        run_cell(magics, "--name needs-file --no-http", NEEDS_FILE.format(name="NeedsFile", path=str(needed)),
                 "needs-file-cell")
    assert "FileNotFoundError" in str(info.value) and "Traceback" not in str(info.value)
    widget = serve.widgets.widget_for("needs-file")
    state = widget.deploy_state
    count = magics.shell.execution_count
    assert f"Cell In[{count}], line 5, in __init__" in state.failure.error
    assert "----> 5         open(path).close()" in state.failure.error
    assert any("looking for" in line for line in state.failure.log_lines)
    assert not state.failure.kept and "needs-file" not in serve.status().applications
    assert [s.state for s in state.stages][:2] == [StageState.DONE, StageState.FAILED]

    needed.write_text("weights")
    widget.handle_command({"cmd": "retry"})  # what the page's Retry button sends
    wait_until(lambda: serve.status().applications.get("needs-file") is not None
               and serve.status().applications["needs-file"].status == "RUNNING", timeout_s=60, what="redeployed")
    retried = serve.widgets.widget_for("needs-file")
    wait_until(lambda: retried.deploy_state.finished and not retried.deploy_state.failed, what="Retry's stages")
    assert retried.listening and serve.get_app_handle("needs-file").remote().result() == "ok"
    capsys.readouterr()


def test_keep_failed_leaves_a_deploy_failed_app_that_delete_removes(magics, serve_instance, tmp_path, capsys):
    with pytest.raises(UsageError):
        run_cell(magics, "--name kept-failed --no-http --keep-failed",
                 NEEDS_FILE.format(name="KeptFailed", path=str(tmp_path / "missing")), "kept-cell")
    assert serve.status().applications["kept-failed"].status == "DEPLOY_FAILED"
    widget = serve.widgets.widget_for("kept-failed")
    assert widget.deploy_state.failure.kept and "Cell In[" in widget.deploy_state.failure.error
    wait_until(lambda: widget.data.get("controls"), what="Delete offered")
    widget.handle_command({"cmd": "delete"})  # what the page sends once Delete is confirmed
    wait_until(lambda: "kept-failed" not in serve.status().applications, what="deleted")
    capsys.readouterr()


def test_a_failed_update_keeps_the_old_version_serving_and_says_so(magics, serve_instance, tmp_path, capsys):
    good = "class Updated:\n    def __call__(self, request=None):\n        return 'old'\n"
    run_cell(magics, "--name updated --no-http", good, "updated-cell")
    with pytest.raises(UsageError):
        run_cell(magics, "--name updated --no-http",
                 NEEDS_FILE.format(name="Updated", path=str(tmp_path / "missing")), "updated-cell")
    failure = serve.widgets.widget_for("updated").deploy_state.failure
    assert failure.kept and "keeps serving" in failure.note
    assert serve.get_app_handle("updated").remote().result() == "old"  # the old replicas still answer
    capsys.readouterr()
