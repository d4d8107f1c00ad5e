"""Connecting over Ray Client retries only the transient server-spawn failure, and only a few times."""

from __future__ import annotations

from typing import Any

import pytest

from serve_nb.bootstrap import is_transient_client_failure, _init_with_retries

SPAWN_FAILURE = ConnectionAbortedError(
    "Initialization failure from server:\nTraceback ...\nRuntimeError: Starting Ray client server failed. "
    "See ray_client_server_23000.err for detailed logs."
)
ZOMBIE_FAILURE = ConnectionAbortedError(
    "Initialization failure from server:\nTraceback (most recent call last):\n"
    '  File ".../proxier.py", line 396, in start_specific_server\n    cmd = psutil_proc.cmdline()\n'
    "psutil.ZombieProcess: PID still exists but it's a zombie (pid=646)"
)
RUNTIME_ENV_FAILURE = ConnectionAbortedError(
    "Initialization failure from server:\nTraceback (most recent call last):\n"
    '  File ".../proxier.py", line 366, in start_specific_server\n'
    '  File ".../proxier.py", line 330, in _create_runtime_env\n'
    "RuntimeError: Failed to create runtime_env for Ray client server: No module named 'nope'"
)


class FakeInit:
    """Stands in for ``ray.init``: raises the queued errors in order, then succeeds."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)
        if self.errors:
            raise self.errors.pop(0)


def test_spawn_failure_is_transient_other_errors_are_not():
    assert is_transient_client_failure(SPAWN_FAILURE)
    assert is_transient_client_failure(ZOMBIE_FAILURE)
    assert not is_transient_client_failure(ConnectionAbortedError("Initialization failure from server:\nversion mismatch"))
    assert not is_transient_client_failure(ConnectionError("ray client connection timeout"))
    assert not is_transient_client_failure(RuntimeError("Starting Ray client server failed"))
    assert not is_transient_client_failure(RUNTIME_ENV_FAILURE)


def test_a_transient_failure_is_retried_with_the_same_arguments():
    init = FakeInit(SPAWN_FAILURE, ZOMBIE_FAILURE)
    _init_with_retries(init, {"address": "ray://h:10001", "log_to_driver": False}, pause_s=0)
    assert init.calls == [{"address": "ray://h:10001", "log_to_driver": False}] * 3


def test_retries_are_bounded_and_the_last_error_is_raised():
    init = FakeInit(SPAWN_FAILURE, SPAWN_FAILURE, SPAWN_FAILURE, SPAWN_FAILURE)
    with pytest.raises(ConnectionAbortedError, match="Starting Ray client server failed"):
        _init_with_retries(init, {"address": "ray://h:10001"}, attempts=3, pause_s=0)
    assert len(init.calls) == 3


@pytest.mark.parametrize("error", [ConnectionError("ray client connection timeout"), RUNTIME_ENV_FAILURE])
def test_any_other_error_is_raised_at_once(error):
    init = FakeInit(error)
    with pytest.raises(type(error)):
        _init_with_retries(init, {"address": "ray://h:10001"}, pause_s=0)
    assert len(init.calls) == 1
