"""What a replica tells the controller about the requests it ran since its last report: how many, how many
failed, and their latencies in fixed buckets (so reports from many replicas add up, and p50/p99 can be
read from the sum). Pure: no clock, no Ray."""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass

from serve_nb.core.metrics import LATENCY_BUCKETS_MS


@dataclass(frozen=True)
class TallySnapshot:
    """Requests since the last report. ``buckets[i]`` counts latencies ≤ ``LATENCY_BUCKETS_MS[i]`` (and above
    the bucket before); the last one those above every boundary."""

    count: int
    errors: int
    buckets: tuple[int, ...]
    latency_sum_ms: float


class RequestTally:
    """Counts requests as they finish (from the replica's loop and its threads); ``drain`` hands them over."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._count = 0
        self._errors = 0
        self._buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        self._sum = 0.0

    def add(self, latency_ms: float, error: bool) -> None:
        index = bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)
        with self._lock:
            self._count += 1
            self._errors += error
            self._buckets[index] += 1
            self._sum += latency_ms

    def drain(self) -> TallySnapshot | None:
        """What was counted since the last drain; None if nothing."""
        with self._lock:
            if not self._count:
                return None
            snapshot = TallySnapshot(self._count, self._errors, tuple(self._buckets), self._sum)
            self._reset()
            return snapshot
