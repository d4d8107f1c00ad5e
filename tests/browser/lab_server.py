"""A JupyterLab server of the test's own: temporary root and Jupyter/IPython dirs, a free port, a token.

Why so much isolation: the browser tests must not read or write anything of the developer's (settings,
workspaces, kernels, IPython history), and must not depend on what else runs on the machine. The kernel it
starts runs this checkout's serve_nb (``PYTHONPATH``) with this interpreter, and never inherits
``RAY_ADDRESS``. Stopping is by the server's own PID (kernels first, through the REST API), and everything it
started is accounted for, so a test can prove it left no process behind.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0

# JupyterLab settings that keep the page deterministic: no toasts over the widget (news, update checks), and
# every cell kept in the DOM (no windowing), so a locator finds a cell whether or not it is scrolled into view.
LAB_SETTINGS: dict[str, dict[str, object]] = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LabServer:
    """A running ``jupyter lab`` process and how to reach it."""

    process: subprocess.Popen[bytes]
    port: int
    token: str
    root_dir: Path
    log_path: Path
    descendants: set[int] = field(default_factory=set)  # every process seen under the server, for the leak check

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def notebook_url(self, name: str) -> str:
        return f"{self.base_url}/lab/tree/{name}?token={self.token}"

    def api(self, method: str, path: str) -> object:
        """Call the server's REST API with the token; the decoded JSON answer (None for an empty body)."""
        request = urllib.request.Request(f"{self.base_url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def note_descendants(self) -> set[int]:
        """Remember every process now running under the server (kernels, and the Ray a kernel started)."""
        try:
            self.descendants |= {p.pid for p in psutil.Process(self.process.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            pass
        return self.descendants


def write_isolated_dirs(base: Path) -> dict[str, str]:
    """Jupyter's and IPython's config, data and runtime dirs under ``base``, with a kernel spec that runs this
    interpreter; the environment variables that point there."""
    dirs = {name: base / name for name in ("config", "data", "runtime", "ipython")}
    for path in dirs.values():
        path.mkdir(parents=True)
    settings_dir = dirs["config"] / "lab" / "user-settings"
    for rel, values in LAB_SETTINGS.items():
        target = settings_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    # The data dir comes first on Jupyter's path: "python3" here wins over any other, so the kernel is exactly
    # the interpreter running the tests (with serve_nb's dependencies), not whatever `python` PATH finds.
    spec_dir = dirs["data"] / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (serve_nb browser tests)",
        "language": "python",
    }))
    return {
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "IPYTHONDIR": str(dirs["ipython"]),
    }


def server_environment(isolated: dict[str, str]) -> dict[str, str]:
    """The server's (and so its kernels') environment: this checkout first on PYTHONPATH, this interpreter's
    bin first on PATH, no RAY_ADDRESS (the kernel must start a Ray of its own, never join another)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and k != "JUPYTER_PATH"}
    env.update(isolated)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    return env


def start_lab(root_dir: Path, state_dir: Path) -> LabServer:
    """Start JupyterLab on 127.0.0.1 (free port, random token, no browser) and return once its API answers."""
    env = server_environment(write_isolated_dirs(state_dir))
    port, token = free_port(), secrets.token_hex(16)
    log_path = state_dir / "jupyterlab.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser",
             "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root_dir}",
             "--ServerApp.terminals_enabled=False",
             *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI containers run as root
            cwd=root_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    lab = LabServer(process, port, token, root_dir, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {process.returncode} while starting:\n{lab.log_tail()}")
        try:
            lab.api("GET", "/api/status")
            return lab
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                stop_lab(lab)
                raise RuntimeError(f"JupyterLab did not answer within {START_TIMEOUT_S:g} s:\n{lab.log_tail()}")
            time.sleep(0.2)  # polling the API for a bounded time: the condition is "it answers"


def stop_lab(lab: LabServer) -> list[str]:
    """Shut the kernels down (REST API), then the server (SIGTERM, SIGKILL after a bounded wait), then kill
    any process that was seen under it and still lives. Returns what had to be killed (empty when the
    shutdown was clean), so the caller can fail on it after the machine is clean again."""
    lab.note_descendants()
    if lab.process.poll() is None:
        try:
            for kernel in lab.api("GET", "/api/kernels") or []:  # type: ignore[union-attr]
                lab.api("DELETE", f"/api/kernels/{kernel['id']}")  # type: ignore[index]
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # the server is going away anyway; the leftovers are killed below and reported
        lab.process.send_signal(signal.SIGTERM)
        try:
            lab.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            lab.process.kill()
            lab.process.wait(timeout=STOP_TIMEOUT_S)
    survivors = [p for p in _alive(lab.descendants)]
    _, still_alive = psutil.wait_procs(survivors, timeout=STOP_TIMEOUT_S)
    killed = []
    for proc in still_alive:
        try:
            killed.append(f"{proc.pid} {' '.join(proc.cmdline())[:160]}")
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(still_alive, timeout=STOP_TIMEOUT_S)
    return killed


def _alive(pids: set[int]) -> list[psutil.Process]:
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    return procs


def raylet_pids() -> set[int]:
    """PIDs of the processes ``pgrep -f raylet`` finds: raylets, and Ray workers (their command lines name
    their raylet's socket), but not this process."""
    found = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.info["pid"] != os.getpid() and "raylet" in " ".join(proc.info.get("cmdline") or []):
            found.add(proc.info["pid"])
    return found
