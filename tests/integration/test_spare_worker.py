"""serve.run leaves one idle worker process behind for the next replica (see serve_nb/bootstrap.py)."""

from __future__ import annotations

import os
from pathlib import Path

import ray

from helpers import run_scenario, wait_until
from serve_nb import bootstrap as spare


def _process_title(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().split(b"\0")[0].decode()


def test_spare_task_runs_on_a_worker_that_then_waits_idle(ray_session):
    ref = spare.keep_spare_worker()
    assert ref is not None
    pid = ray.get(ref, timeout=60)
    assert pid != os.getpid()
    # The worker survives the task and goes back to Ray's pool of idle workers, ready for an actor.
    wait_until(lambda: _process_title(pid) == "ray::IDLE", what=f"worker {pid} to be idle in Ray's pool")


def test_serve_run_asks_for_a_spare_once_the_app_is_running(serve_instance, monkeypatch):
    serve = serve_instance
    seen: list[str] = []
    monkeypatch.setattr(
        spare, "keep_spare_worker_soon", lambda: seen.append(serve.status().applications["spare_app"].status)
    )

    @serve.deployment
    def hello() -> str:
        return "hi"

    serve.run(hello.bind(), name="spare_app", route_prefix=None)
    assert seen == ["RUNNING"]


def test_spare_worker_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("SERVE_NB_SPARE_WORKER", "0")
    assert spare.keep_spare_worker() is None
    monkeypatch.setenv("SERVE_NB_SPARE_WORKER", "off")
    assert not spare.enabled()
    monkeypatch.setenv("SERVE_NB_SPARE_WORKER", "1")
    assert spare.enabled()


def test_a_prestarted_worker_is_taken_by_the_next_actors():
    """What serve.start asks for when it creates the controller: one more idle worker, used by a replica."""
    run_scenario(Path(__file__).with_name("prestart_scenario.py"), timeout_s=300)


def test_prestart_is_skipped_when_turned_off(monkeypatch):
    monkeypatch.setenv("SERVE_NB_SPARE_WORKER", "0")
    assert spare.prestart_worker() is False
