"""A real local Ray, started once per test session; every test cleans up its own apps."""

from __future__ import annotations

import socket
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


@pytest.fixture
def default_http_port_free():
    """No serve_nb of this test process on the default HTTP port (8000), so that a ``serve_nb run`` child takes it
    as it would on a user's machine; later tests' ``serve_instance`` starts serve_nb again."""
    import ray

    import serve_nb as serve
    from helpers import HTTP_PORT, wait_until

    if ray.is_initialized():
        serve.shutdown()

    def free() -> bool:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", HTTP_PORT))
            except OSError:
                return False
        return True

    wait_until(free, timeout_s=30, what=f"port {HTTP_PORT} to be free")
