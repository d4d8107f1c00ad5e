"""Test helpers: bounded waiting for a condition, never a bare sleep."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout_s: float = 20.0, interval_s: float = 0.02, what: str = "") -> T:
    """Return the first truthy value of ``condition()``; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except AssertionError as exc:
            last_exc = exc
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what or condition}") from last_exc
