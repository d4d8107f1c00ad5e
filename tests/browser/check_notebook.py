"""The notebook the browser tests drive: set-up, one ``%%serve`` cell, requests from a later cell, shutdown.

Written with nbformat into the test's temporary JupyterLab root. Its last cell stops serve_nb and Ray, as
every notebook of this repository ends, so the kernel's Ray is gone before the kernel is.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

NOTEBOOK = "serve_nb_browser_check.ipynb"
REOPENED = "serve_nb_browser_check_reopened.ipynb"  # the saved notebook, opened again without its widgets' models
APP = "greeter"
DEPLOYMENT = "Greeter"
REQUESTS_SENT = 30
REQUESTS_CONCURRENT = 6
SETUP_CELL, SERVE_CELL, REQUESTS_CELL, STOP_CONTROLLER_CELL, RESUME_CONTROLLER_CELL, SHUTDOWN_CELL = range(6)
#: A stopped controller is resumed by the kernel itself after this, whatever became of the test that stopped it.
CONTROLLER_STOP_LIMIT_S = 60


def notebook_cells(http_port: int) -> list[str]:
    """The notebook the tests drive: set-up, the ``%%serve`` cell, requests from a later cell, a pair of cells that
    stop and resume the controller's process (what a hung head node looks like to the widget), shutdown."""
    return [
        "%load_ext serve_nb\n"
        "import ray\n"
        "import serve_nb as serve\n\n"
        "# A fresh Ray of this kernel's own (never one found on the machine), room for a few one-CPU replicas,\n"
        "# and HTTP on a free port, so nothing else running here matters.\n"
        "ray.init(address='local', num_cpus=8, include_dashboard=False, log_to_driver=False, logging_level='ERROR')\n"
        f"serve.start(http_options={{'host': '127.0.0.1', 'port': {http_port}}})\n"
        "print('serve_nb started')",
        f"%%serve --name {APP} --num-replicas 1\n"
        f"import asyncio\n\n"
        f"class {DEPLOYMENT}:\n"
        "    async def __call__(self, request):\n"
        "        await asyncio.sleep(0.3)  # long enough for the chart to see requests ongoing\n"
        "        return 'hello from the browser test'",
        "import urllib.request\n"
        "from concurrent.futures import ThreadPoolExecutor\n\n"
        f"def get(_):\n"
        f"    return urllib.request.urlopen('http://127.0.0.1:{http_port}/{APP}', timeout=30).read().decode()\n\n"
        f"with ThreadPoolExecutor({REQUESTS_CONCURRENT}) as pool:  # some load at once, for the chart\n"
        f"    answers = set(pool.map(get, range({REQUESTS_SENT})))\n"
        f"print('sent {REQUESTS_SENT} requests, answers:', sorted(answers))",
        "import os, signal, threading\n"
        "from serve_nb.common.names import CONTROLLER_NAME, NAMESPACE\n\n"
        "controller = ray.get_actor(CONTROLLER_NAME, namespace=NAMESPACE)\n"
        "controller_pid = ray.get(controller.__ray_call__.remote(lambda self: os.getpid()))\n"
        f"threading.Timer({CONTROLLER_STOP_LIMIT_S}, os.kill, (controller_pid, signal.SIGCONT)).start()\n"
        "os.kill(controller_pid, signal.SIGSTOP)\n"
        "print('controller stopped')",
        "os.kill(controller_pid, signal.SIGCONT)\n"
        "print('controller resumed')",
        "serve.shutdown()\n"
        "ray.shutdown()\n"
        "print('ray stopped')",
    ]


def write_notebook(path: Path, http_port: int) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in notebook_cells(http_port)]
    nbformat.write(nb, path)
