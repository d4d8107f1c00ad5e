"""The %%serve flags, widget replacement and the widget's buttons, %serve_export from the kernel's history,
driven in-process (IPython shell)."""

from __future__ import annotations

import importlib
import sys

import pytest
import yaml
from IPython import get_ipython
from IPython.core.error import UsageError
from IPython.testing.globalipapp import start_ipython

import serve_nb as serve
from helpers import taken_port, wait_until


@pytest.fixture(scope="module")
def ip(ray_session):
    shell = start_ipython() or get_ipython()  # one test shell per process: a second start returns None
    shell.run_line_magic("load_ext", "serve_nb")
    return shell


@pytest.fixture
def new_session(ip):
    """Input history of its own, numbered from In [1], as in a fresh kernel."""
    ip.history_manager.reset(new_session=True)
    ip.execution_count = 1
    yield
    ip.user_ns.pop("__session__", None)


def run(ip, source: str, store_history: bool = True):
    """Run ``source`` as a kernel runs a cell: kept in the input history (nbval runs cells without keeping them),
    an error shown rather than raised."""
    return ip.run_cell(source, store_history=store_history)


def test_flags_args_user_config_and_default_names(ip, serve_instance):
    ip.run_cell("import serve_nb as serve\n@serve.deployment\nclass Upper:\n    def __call__(self, s):\n        return s.upper()")
    ip.run_cell_magic(
        "serve",
        "--max-ongoing 7 --user-config '{\"suffix\": \"!\"}' --args \"Upper.bind(), prefix='>'\" --num-replicas 2",
        "class Shout:\n"
        "    def __init__(self, upper, prefix):\n        self.upper, self.prefix = upper, prefix\n"
        "    def reconfigure(self, config):\n        self.suffix = config['suffix']\n"
        "    async def __call__(self, request=None):\n"
        "        return self.prefix + (await self.upper.remote('hi')) + self.suffix\n",
    )
    app = serve.status().applications["shout"]  # default name: the class name, lower-cased
    assert app.route_prefix == "/shout"  # default prefix: /<app>
    assert app.deployments["Shout"].replica_states == {"RUNNING": 2}
    assert serve.get_app_handle("shout").remote().result() == ">HI!"
    assert "Shout" in ip.user_ns  # the class stays usable in later cells
    widget = serve.widgets.widget_for("shout")  # the widget the cell showed, from any later cell
    assert widget.app_name == "shout" and widget.listening
    assert widget.handle.remote().result() == ">HI!"
    with pytest.raises(LookupError, match="no-such-app"):
        serve.widgets.widget_for("no-such-app")
    detail = serve.feed.get(serve.feed.app("shout"))
    assert next(d for d in detail.deployments if d.name == "Shout").target == 2


def test_rerun_keeps_the_cells_widget_and_autoscale_no_wait(ip, serve_instance):
    cell = "class Auto:\n    def __call__(self, request=None):\n        return 'auto'\n"
    ip.run_cell_magic("serve", "--name auto-app --no-http --autoscale 1:3:4 --no-wait", cell)
    first = serve.widgets.widget_for("auto-app")
    wait_until(lambda: serve.status().applications["auto-app"].status == "RUNNING", what="auto-app running")
    ip.run_cell_magic("serve", "--name auto-app --no-http --autoscale 1:3:4", cell)
    second = serve.widgets.widget_for("auto-app")
    assert second is first and second.listening  # the same widget, updated in place
    detail = serve.feed.get(serve.feed.app("auto-app"))
    assert detail.route_prefix is None
    assert detail.deployments[0].autoscaling["max_replicas"] == 3
    assert detail.deployments[0].autoscaling["target_ongoing_requests"] == 4
    with pytest.raises(ValueError, match="autoscales"):  # manual scaling is for fixed-size deployments
        serve.scale_deployment("auto-app", "Auto", 2)


def test_widget_buttons_request_scale_and_delete(ip, serve_instance):
    ip.run_cell_magic(
        "serve", "--name buttons",
        "class Buttons:\n    async def __call__(self, request):\n        return {'got': (await request.json())['x']}\n",
    )
    widget = serve.widgets.widget_for("buttons")
    wait_until(lambda: widget.view is not None and widget.view.url is not None, what="first view")
    # Each control sends the widget a command message from the page; these are those messages.
    widget.handle_command({"cmd": "request", "method": "POST", "path": "", "body": '{"x": 42}'})
    wait_until(lambda: "200 in" in widget.answer, what="the request form's answer")
    assert '"got": 42' in widget.answer
    widget.handle_command({"cmd": "request", "method": "POST", "path": "", "body": "{not json"})
    assert "not valid JSON" in widget.answer

    def replica_states() -> dict[str, int]:
        return serve.status().applications["buttons"].deployments["Buttons"].replica_states

    assert widget.scale_target == "Buttons"  # the only deployment: no need to pick it
    widget.handle_command({"cmd": "scale", "step": 1})
    wait_until(lambda: replica_states() == {"RUNNING": 2}, what="scaled to 2")
    wait_until(lambda: widget.view.deployments[0].target == 2, what="the widget's row follows")
    assert widget.view.deployments[0].replicas == "2 / 2"
    widget.handle_command({"cmd": "scale", "step": -1})
    wait_until(lambda: replica_states() == {"RUNNING": 1}, what="scaled back to 1")
    wait_until(lambda: widget.view.deployments[0].target == 1, what="the widget's row follows")
    widget.handle_command({"cmd": "scale", "step": -1})  # never below one: the widget says so, touches nothing
    assert "at least one replica" in widget.notice

    serve.scale_deployment("buttons", "Buttons", 2)  # the same, through the public API
    wait_until(lambda: replica_states() == {"RUNNING": 2}, what="scaled to 2 again")
    with pytest.raises(ValueError, match="no deployment 'Nope'"):
        serve.scale_deployment("buttons", "Nope", 2)
    with pytest.raises(ValueError, match="num_replicas must be an integer >= 1"):
        serve.scale_deployment("buttons", "Buttons", 0)
    widget.handle_command({"cmd": "delete"})  # the page asks for confirmation before it sends this
    wait_until(lambda: "buttons" not in serve.status().applications, what="deleted")
    wait_until(lambda: widget.view.status == "DELETED", what="deleted badge")
    assert widget.data["deleted"] and not widget.data["controls"] and not widget.listening
    assert "The application was deleted at " in widget.snapshot_html()
    assert "<polyline" in widget.snapshot_html() or "<path" in widget.snapshot_html()  # the chart stays


def test_serve_connect_with_a_taken_port_says_so_in_one_line_and_a_later_cell_does_not_fall_back(ip, ray_session):
    magics = ip.magics_manager.registry["ServeMagics"]
    serve.shutdown()
    try:
        with taken_port() as port:
            with pytest.raises(UsageError) as info:
                ip.run_line_magic("serve_connect", f"--port {port}")
            assert str(info.value) == f"Port {port} is taken; use %serve_connect --port {port + 1}"
            with pytest.raises(UsageError) as info:  # not quietly deployed on 8000 instead
                ip.run_cell_magic("serve", "--name elsewhere", "def elsewhere(request):\n    return 'x'\n")
            assert str(info.value) == f"Port {port} is taken; use %serve_connect --port {port + 1}"
    finally:
        magics._http_options = {}
        serve.shutdown()  # the next test's serve_instance starts Serve on the default port again


def test_line_magics_delete_and_usage_errors(ip, serve_instance):
    ip.run_cell_magic("serve", "--name gone --no-http", "def gone():\n    return 1\n")
    ip.run_line_magic("serve_delete", "gone")
    assert "gone" not in serve.status().applications
    with pytest.raises(UsageError, match="no application named"):
        ip.run_line_magic("serve_delete", "gone")
    with pytest.raises(UsageError, match="--args"):
        ip.run_cell_magic("serve", "--args 'undefined_name + 1'", "def f():\n    return 1\n")
    with pytest.raises(UsageError, match="--autoscale"):
        ip.run_cell_magic("serve", "--autoscale 3:1", "def f():\n    return 1\n")
    with pytest.raises(UsageError, match="--user-config must be JSON"):
        ip.run_cell_magic("serve", "--user-config '{bad'", "def f():\n    return 1\n")


def test_interrupting_a_cell_stuck_in_init_says_so_briefly_shows_the_live_widget_and_the_cell_exports(
        ip, serve_instance, new_session, caplog, tmp_path):
    import _thread
    import logging
    import os
    import signal
    import threading

    run(ip, "from helpers import make_signal\ngate = make_signal()")
    cell_done = threading.Event()
    unanswered: list[bool] = []

    def interrupt_once_waiting() -> None:
        wait_until(lambda: any("has been in __init__" in r.getMessage() for r in caplog.records), timeout_s=30,
                   what="serve.run waiting")
        os.kill(os.getpid(), signal.SIGINT)  # the notebook's interrupt button: SIGINT to the kernel's process
        if not cell_done.wait(30):  # never hang the suite: say so, and get the cell out of its wait
            unanswered.append(True)
            _thread.interrupt_main()

    with caplog.at_level(logging.WARNING, logger="serve_nb"):
        interrupter = threading.Thread(target=interrupt_once_waiting, daemon=True)
        interrupter.start()
        try:
            interrupted = run(ip, "%%serve --name stuck-cell --no-http --args gate\nimport ray\nclass Stuck:\n"
                                  "    def __init__(self, gate):\n        ray.get(gate.wait.remote())\n"
                                  "    def __call__(self):\n        return 'up'\n")
        finally:
            cell_done.set()
        interrupter.join(5)
    assert not unanswered, "the interrupt did not stop the cell's wait within 30 s"
    assert isinstance(interrupted.error_in_exec, UsageError)
    assert "stopped waiting; the application is still deploying" in str(interrupted.error_in_exec)
    widget = serve.widgets.widget_for("stuck-cell")
    assert widget.listening
    ip.user_ns["gate"].send.remote()
    wait_until(lambda: widget.view is not None and widget.view.status == "RUNNING", timeout_s=30, what="the widget to show RUNNING")
    assert widget.handle.remote().result(timeout_s=10) == "up"
    # The cell raised, but its app deployed: the export has it.
    ip.run_line_magic("serve_export", f"stuck-cell -o {tmp_path}")
    assert "class Stuck:" in (tmp_path / "notebook.py").read_text()


@pytest.mark.parametrize("stored", [True, False], ids=["kept-in-history", "run-without-history-as-nbval-does"])
def test_serve_export_writes_the_apps_the_kernel_ran_leaving_failed_inputs_out(ip, serve_instance, new_session,
                                                                               tmp_path, capsys, stored):
    ip.user_ns["__session__"] = str(tmp_path / "My Demo.ipynb")  # as ipykernel sets it under Jupyter
    run(ip, "GREETING = 'Hello'", stored)
    run(ip, "def greet(name):\n    return f'{GREETING}, {name}!'", stored)
    run(ip, "print(greet('kernel'))", stored)
    cell = ("%%serve --name exported --no-http\n"
            "class Exported:\n    def __call__(self, name='x'){}\n        return greet(name)")
    assert not run(ip, cell.format(""), stored).success  # a typo: the cell raised and deployed nothing
    assert run(ip, cell.format(":"), stored).success
    assert serve.get_app_handle("exported").remote("cell").result() == "Hello, cell!"

    out = tmp_path / "out"
    capsys.readouterr()
    assert run(ip, f"%serve_export -o {out}", stored).success
    assert capsys.readouterr().out == (f"Wrote {out}/my_demo.py and {out}/serve_config.yaml.\n"
                                       f"Run it with: serve_nb run {out}/serve_config.yaml\n")
    module = (out / "my_demo.py").read_text()
    assert module.startswith("# Generated by serve_nb from My Demo.ipynb as its kernel ran it: its %%serve apps")
    label = "In [{}]" if stored else "input {}"  # inputs the history lacks are numbered as the magics saw them run
    assert f"# {label.format(1)}\nGREETING = 'Hello'" in module and f"# {label.format(2)}\ndef greet(name):" in module
    assert f"# {label.format(5)} (%%serve --name exported --no-http)" in module  # the broken 4th is left out
    assert "print(" not in module and "serve_export" not in module
    [app] = yaml.safe_load((out / "serve_config.yaml").read_text())["applications"]
    assert app["import_path"] == "my_demo:app_exported" and app["route_prefix"] is None

    sys.path.insert(0, str(out))
    try:
        exported = importlib.import_module("my_demo")
        handle = serve.run(exported.app_exported, name="exported-module", route_prefix=None)
        assert handle.remote("module").result() == "Hello, module!"  # greet and GREETING came along
    finally:
        sys.path.remove(str(out))
        sys.modules.pop("my_demo", None)


def test_serve_export_errors_are_one_line_and_write_nothing(ip, serve_instance, new_session, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UsageError, match=r"^%serve_export: No %%serve cell among the 0 cells given"):
        ip.run_line_magic("serve_export", f"-o {out}")
    run(ip, "%%serve --name needs-more --no-http\ndef needs_more():\n    return LIMIT")
    for line, expected in ((f"-o {out}", r"In \[1\] \(%%serve --name needs-more --no-http\) uses 'LIMIT', which "
                                         "no earlier cell defines"),
                           (f"nope -o {out}", "No %%serve app named 'nope'; the notebook's apps: needs-more")):
        with pytest.raises(UsageError, match=expected) as info:
            ip.run_line_magic("serve_export", line)
        assert "\n" not in str(info.value)
    assert not out.exists()
