"""serve.run leaves one idle worker process behind for the next replica (see serve_nb/runtime/spare.py)."""

from __future__ import annotations

import os

import ray

from serve_nb.runtime import spare


def _process_title(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().split(b"\0")[0].decode()


def test_spare_task_runs_on_a_worker_that_then_waits_idle(ray_session):
    ref = spare.keep_spare_worker()
    assert ref is not None
    pid = ray.get(ref, timeout=60)
    assert pid != os.getpid()
    # The worker survives the task and sits in Ray's pool, ready for an actor.
    assert _process_title(pid).startswith("ray::")


def test_spare_worker_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("SERVE_NB_SPARE_WORKER", "0")
    assert spare.keep_spare_worker() is None
    monkeypatch.setenv("SERVE_NB_SPARE_WORKER", "off")
    assert not spare.enabled()
    monkeypatch.setenv("SERVE_NB_SPARE_WORKER", "1")
    assert spare.enabled()
