"""A cluster started separately with `ray start --head`, used from notebooks by address."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests

from helpers import wait_until
from test_notebook import kernel_client, stream_text

GCS_PORT = 6395
CLIENT_PORT = 10001  # Ray Client server (ray://); worker ports start above it
HTTP_PORT = 8195
TESTS_DIR = str(Path(__file__).resolve().parents[1])  # for the kernel to import helpers.wait_until


@pytest.fixture
def head_node():
    """`ray start --head --block`: terminating that process stops this cluster and nothing else."""
    ray_cli = str(Path(sys.executable).parent / "ray")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = tempfile.NamedTemporaryFile(prefix="ray-start-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [ray_cli, "start", "--head", f"--port={GCS_PORT}", f"--ray-client-server-port={CLIENT_PORT}", "--num-cpus=4",
         "--include-dashboard=false", "--block"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"`ray start` exited with {proc.returncode}:\n{Path(log.name).read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", GCS_PORT), timeout=1).close()
            return True
        except OSError:
            return False

    try:
        wait_until(up, timeout_s=90, what="the head node")
        yield f"127.0.0.1:{GCS_PORT}"
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
        os.unlink(log.name)
        _forget_cluster_record(GCS_PORT)
    # Left behind, the record makes every later plain `ray.init(num_cpus=...)` on this machine try to
    # join the dead cluster and fail ("num_cpus and num_gpus must not be provided").
    assert not _records_cluster(GCS_PORT), f"{CLUSTER_RECORD} still names the stopped cluster"


CLUSTER_RECORD = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"


def _records_cluster(port: int) -> bool:
    try:
        return CLUSTER_RECORD.read_text().strip().endswith(f":{port}")
    except OSError:
        return False


def _forget_cluster_record(port: int) -> None:
    """What `ray stop` does for the cluster it stops: drop Ray's record of it. `ray stop` itself would
    also stop the test session's own Ray, so only the record of this cluster is removed."""
    if _records_cluster(port):
        CLUSTER_RECORD.unlink()


def test_deploy_disconnect_and_see_it_again_from_a_fresh_kernel(serve_instance, head_node):
    first, nb1 = kernel_client([
        f"%load_ext serve_nb\n%serve_connect {head_node}",
        f"import serve_nb as serve\nserve.start(http_options={{'port': {HTTP_PORT}}})",
        "%%serve --name far-away\nclass Far:\n    async def __call__(self, request):\n        return 'served by the cluster'",
        "import ray\nray.shutdown()\nprint('disconnected')",
    ])
    with first.setup_kernel():
        for i in range(4):
            first.execute_cell(nb1.cells[i], i)
    assert f"Connected to Ray at {head_node}" in stream_text(nb1.cells[0])
    assert "disconnected" in stream_text(nb1.cells[3])
    # The app outlives the kernel that deployed it.
    assert requests.get(f"http://127.0.0.1:{HTTP_PORT}/far-away", timeout=10).text == "served by the cluster"

    second, nb2 = kernel_client([
        f"%load_ext serve_nb\n%serve_connect {head_node}",
        f"import sys\nsys.path.insert(0, {TESTS_DIR!r})\nfrom helpers import wait_until\n"
        "from serve_nb.widgets import Dashboard\nd = Dashboard()\n"
        "wait_until(lambda: 'far-away' in d.app_names, timeout_s=30, what='the app to reach the widget')\n"
        "print(d.app_names)\nd",
        "%serve_shutdown",
    ])
    with second.setup_kernel():
        for i in range(3):
            second.execute_cell(nb2.cells[i], i)
    assert stream_text(nb2.cells[1]).strip() == "['far-away']"
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in nb2.cells[1].outputs)
    assert "serve_nb shut down." in stream_text(nb2.cells[2])


def test_ray_client_address_from_a_kernel(serve_instance, head_node):
    client, nb = kernel_client([
        f"%load_ext serve_nb\n%serve_connect ray://127.0.0.1:{CLIENT_PORT}",
        f"import serve_nb as serve\nserve.start(http_options={{'port': {HTTP_PORT}}})",
        "%%serve --name via-client\nclass ViaClient:\n    def __call__(self, request=None):\n        return 'over ray client'\n"
        "    def double(self, arr):\n        return arr * 2",
        "h = serve.get_app_handle('via-client')\nprint(h.remote().result())\nprint(await h.remote())",
        # 4 MB each way: through the object store, over the Ray client connection
        "import numpy as np\na = np.arange(1_000_000, dtype=np.float32)\nprint((h.double.remote(a).result() == a * 2).all())",
    ])
    with client.setup_kernel():
        for i in range(5):
            client.execute_cell(nb.cells[i], i)
        assert stream_text(nb.cells[4]).strip() == "True", nb.cells[4].outputs
        assert f"Connected to Ray at ray://127.0.0.1:{CLIENT_PORT}" in stream_text(nb.cells[0])
        assert stream_text(nb.cells[3]) == "over ray client\nover ray client\n"
        assert requests.get(f"http://127.0.0.1:{HTTP_PORT}/via-client", timeout=10).text == "over ray client"
