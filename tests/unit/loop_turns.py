"""Waiting inside a test's event loop for a condition, bounded by loop turns rather than wall-clock time
(fakes answer within a few turns; a fixed count fails fast and never flakes on a slow machine)."""

from __future__ import annotations

import asyncio
from typing import Callable


async def until(condition: Callable[[], bool], what: str = "the condition", turns: int = 10_000) -> None:
    """Let the event loop run until ``condition`` holds; fail after ``turns`` turns."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"gave up waiting for {what}")
