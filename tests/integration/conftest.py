"""A real local Ray, started once per test session; every test cleans up its own apps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.fixture(scope="session")
def ray_session():
    import ray

    import serve_nb as serve

    if not ray.is_initialized():
        # Logical CPUs: replicas reserve one each by default (as in Ray Serve); tests run several.
        ray.init(
            address="local",  # always a fresh cluster of our own, never one started elsewhere
            num_cpus=16,
            resources={"two_slots": 2},  # a scarce resource, to test updates that cannot surge
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
        )
    yield
    serve.shutdown()
    ray.shutdown()


@pytest.fixture
def serve_instance(ray_session):
    """Serve running; afterwards every application the test left behind is deleted."""
    import serve_nb as serve

    serve.start()
    yield serve
    for name in list(serve.status().applications):
        serve.delete(name)
