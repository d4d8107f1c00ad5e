"""Running the ``serve_nb`` command in child processes for the CLI tests: one serving process at a time,
its output read line by line, stopped with Ctrl-C (SIGINT) as a user would."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Sequence

import requests

from helpers import wait_until

CLI = [sys.executable, "-m", "serve_nb.cli"]


def cli_env(cwd: Path) -> dict[str, str]:
    """No RAY_ADDRESS (a test must never join someone else's cluster); the test's files importable."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(cwd), env.get("PYTHONPATH", "")])
    return env


def cli(args: Sequence[str], cwd: Path, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + list(args), cwd=cwd, env=cli_env(cwd), capture_output=True, text=True, timeout=timeout_s)


class _Exited(Exception):
    """The serving process ended while a test waited for a line."""


class Serving:
    """``serve_nb run ...`` in the background; ``lines`` is everything it printed so far (stdout and stderr)."""

    def __init__(self, args: Sequence[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(CLI + list(args), cwd=cwd, env=cli_env(cwd), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))

    def _drain(self) -> None:
        while True:
            try:
                self.lines.append(self._queue.get_nowait())
            except queue.Empty:
                return

    def wait_for_line(self, text: str, timeout_s: float = 90, after: int = 0) -> str:
        """The first line (from index ``after`` on) containing ``text``; fails with the output if none comes,
        at once if serve_nb exits without printing it."""

        def found() -> str | None:
            self._drain()
            if self.proc.poll() is not None and self._queue.empty():
                self._drain()
                hit = next((line for line in self.lines[after:] if text in line), None)
                if hit is None:
                    raise _Exited(f"serve_nb exited ({self.proc.returncode}) without printing {text!r}:\n"
                                  + "\n".join(self.lines))
                return hit
            return next((line for line in self.lines[after:] if text in line), None)

        try:
            return wait_until(found, timeout_s=timeout_s, interval_s=0.1, what=repr(text))
        except _Exited as exc:  # not an AssertionError, which wait_until would take for "not yet"
            raise AssertionError(str(exc)) from None
        except AssertionError as exc:
            raise AssertionError(f"{exc}\noutput so far:\n" + "\n".join(self.lines)) from None

    def interrupt(self, timeout_s: float = 60) -> int:
        """Ctrl-C, then wait for it to shut everything down and exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout=10)  # it ends at the output's end: every line is queued
        self._drain()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def get(url: str) -> requests.Response:
    return requests.get(url, timeout=30)
