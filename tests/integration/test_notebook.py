"""The %%serve magic in a real kernel (nbclient), and the widgets fed by a real controller."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
import ray
import requests
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

import serve_nb as serve
from helpers import wait_until

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def kernel_client(cells: list[str]) -> tuple[NotebookClient, nbformat.NotebookNode]:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    env_path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ["PATH"] = env_path  # the kernel must run this interpreter (with serve_nb installed)
    return NotebookClient(nb, timeout=180, kernel_name="python3"), nb


def stream_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")


def test_magic_deploys_shows_widget_reruns_in_place_and_handles_work_in_cells(serve_instance):
    address = ray.get_runtime_context().gcs_address
    client, nb = kernel_client([
        f"%load_ext serve_nb\n%serve_connect {address}",
        "%%serve --name kernel-app --num-replicas 2\nclass Greeter:\n    def __call__(self, request=None):\n        return 'v1'",
        "import serve_nb as serve\nh = serve.get_app_handle('kernel-app')\nprint(h.remote().result())\nprint(await h.remote())",
        "%%serve --no-http\nvalue = 3",
        "%%serve --num-replicas 0\nclass Bad:\n    pass",
    ])
    with client.setup_kernel():
        for i in range(3):
            client.execute_cell(nb.cells[i], i)
        assert "Connected to Ray at" in stream_text(nb.cells[0])
        assert any(WIDGET_MIME in o.get("data", {}) for o in nb.cells[1].outputs)
        assert requests.get("http://127.0.0.1:8000/kernel-app").text == "v1"
        assert stream_text(nb.cells[2]) == "v1\nv1\n"
        ids_before = serve.status().applications["kernel-app"].deployments["Greeter"].replica_states

        nb.cells[1].source = nb.cells[1].source.replace("'v1'", "'v2'")
        client.execute_cell(nb.cells[1], 1)
        assert any(WIDGET_MIME in o.get("data", {}) for o in nb.cells[1].outputs)
        assert requests.get("http://127.0.0.1:8000/kernel-app").text == "v2"
        app = serve.status().applications["kernel-app"]
        assert app.status == "RUNNING" and app.deployments["Greeter"].replica_states == {"RUNNING": 2}
        assert ids_before == {"RUNNING": 2}

        for index, expected in ((3, "defines no class, function"), (4, "--num-replicas must be >= 1")):
            with pytest.raises(CellExecutionError) as info:
                client.execute_cell(nb.cells[index], index)
            message = str(info.value)
            assert expected in message and "UsageError" in message
            assert "Traceback" not in message.split("-----", 2)[-1]  # short, not a stack


def test_failed_deploy_shows_the_users_error_briefly(serve_instance):
    address = ray.get_runtime_context().gcs_address
    client, nb = kernel_client([
        f"%load_ext serve_nb\n%serve_connect {address}",
        "%%serve --name kernel-broken --no-http\nclass Broken:\n    def __init__(self):\n        raise RuntimeError('weights not found')",
    ])
    with client.setup_kernel():
        client.execute_cell(nb.cells[0], 0)
        with pytest.raises(CellExecutionError) as info:
            client.execute_cell(nb.cells[1], 1)
    message = str(info.value)
    assert "weights not found" in message and "Fix the cell and run it again" in message
    assert message.count("File ") < 10


def test_widget_traits_follow_the_controller_within_a_second(serve_instance):
    from serve_nb.notebook.widgets import AppWidget, Dashboard

    @serve.deployment(ray_actor_options={"num_cpus": 0.1})
    class Watched:
        def __call__(self):
            print("watched was called")
            return "ok"

    handle = serve.run(Watched.bind(), name="watched", route_prefix="/watched")
    widget = AppWidget("watched", handle)
    wait_until(lambda: widget.view is not None and widget.view.status == "RUNNING", what="first view")
    assert widget.data["deployments"][0]["replicas"] == "1 / 1"
    assert widget.data["url"] == "http://127.0.0.1:8000/watched"
    assert widget.data["curl"] == "curl -s -X GET http://127.0.0.1:8000/watched"

    changed = threading.Event()
    widget.observe(lambda change: any(d["replicas"].endswith("/ 2") for d in change["new"].get("deployments", []))
                   and changed.set(), names="data")
    start = time.monotonic()
    serve.scale_deployment("watched", "Watched", 2)
    assert changed.wait(1.0), "the widget did not reflect the new target within 1 s"
    latency = time.monotonic() - start
    assert latency < 1.0
    wait_until(lambda: len(widget.view.replicas) == 2 and all(r.state == "RUNNING" for r in widget.view.replicas))
    assert (widget.view.deployments[0].running, widget.view.deployments[0].target) == (2, 2)

    assert handle.remote().result() == "ok"
    wait_until(lambda: "watched was called" in widget.logs, what="replica output in the log pane")

    dashboard = Dashboard()
    wait_until(lambda: "watched" in dashboard.app_names, what="dashboard row")
    detail = dashboard.expand("watched")
    wait_until(lambda: detail.view is not None and detail.view.name == "watched")

    serve.delete("watched")
    wait_until(lambda: widget.view.status == "DELETED", what="deleted badge")
    wait_until(lambda: "watched" not in dashboard.app_names, what="dashboard row removed")
    widget.close()
    dashboard.close()
