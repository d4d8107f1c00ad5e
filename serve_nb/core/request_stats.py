"""Live request figures for ``serve.status()`` and the notebook widgets: requests/s, p50/p99 latency and errors
of each deployment over the last ``REQUEST_WINDOW_S`` seconds.

A replica counts the requests it finishes (``RequestTally``) and hands what it counted to the controller
with its periodic report: how many, how many failed, and their latencies in fixed buckets (Ray Serve's
``LATENCY_BUCKETS_MS``), so that the reports of many replicas simply add up. The controller sums them per
deployment into slots of ``SLOT_S`` seconds (``RequestWindow``) and reads the figures off the slots of the
window; it publishes its status several times a second, so the figures slide, and decay to None once
traffic stops, without any new report.

Percentiles from buckets are estimates: the p-th percentile is placed inside the bucket that holds the
ranked request by linear interpolation between the bucket's bounds (as Prometheus' ``histogram_quantile``
does), so it is off by at most that bucket's width: 1 ms below 2 ms, 3 ms up to 5 ms, 5 to 10 ms up to
20 ms, 30 ms up to 50 ms, 50 to 100 ms up to 500 ms, 500 ms up to 1 s, and coarser above. A percentile
beyond the last boundary (10 min) reads as that boundary. Pure: no clock (callers pass the time), no Ray.
"""

from __future__ import annotations

import bisect
import collections
import math
from dataclasses import dataclass, field
from typing import Sequence

from serve_nb.core.metrics import LATENCY_BUCKETS_MS
from serve_nb.types import RequestSummary

#: The figures cover the last minute: long enough that p99 rests on a hundred-odd requests at a few
#: requests per second, short enough that a change of load shows within the minute.
REQUEST_WINDOW_S = 60.0
#: Reports are summed into slots this long, and only complete slots are shown: the figures change at most
#: once per slot however many replicas report (each change wakes every listener of the status feed).
SLOT_S = 1.0


@dataclass(frozen=True)
class TallySnapshot:
    """Requests since the last report. ``buckets[i]`` counts latencies ≤ ``LATENCY_BUCKETS_MS[i]`` (and above
    the bucket before); the last one those above every boundary."""

    count: int
    errors: int
    buckets: tuple[int, ...]
    latency_sum_ms: float


class RequestTally:
    """Counts requests as they finish; ``drain`` hands them over. One thread only (a replica's event loop both
    adds and drains), so no lock: this runs for every request."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._count = 0
        self._errors = 0
        self._buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        self._sum = 0.0

    def add(self, latency_ms: float, error: bool) -> None:
        self._count += 1
        self._errors += error
        self._buckets[bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1
        self._sum += latency_ms

    def drain(self) -> TallySnapshot | None:
        """What was counted since the last drain; None if nothing."""
        if not self._count:
            return None
        snapshot = TallySnapshot(self._count, self._errors, tuple(self._buckets), self._sum)
        self._reset()
        return snapshot


def quantile_ms(buckets: Sequence[int], q: float, bounds: Sequence[float] = LATENCY_BUCKETS_MS) -> float:
    """The ``q``-quantile (0 < q ≤ 1) of latencies counted in ``buckets`` (one more than ``bounds``: the last
    counts those above every bound): linear inside the bucket holding the request of rank ``q * total``, the
    first bucket starting at 0 ms. 0.0 when nothing was counted."""
    total = sum(buckets)
    if not total:
        return 0.0
    rank = q * total
    below = 0
    for index, count in enumerate(buckets):
        if count and below + count >= rank:
            if index >= len(bounds):
                return float(bounds[-1])  # above every boundary: nothing says how far above
            lower = float(bounds[index - 1]) if index else 0.0
            return lower + (float(bounds[index]) - lower) * (rank - below) / count
        below += count
    return float(bounds[-1])


@dataclass
class _Slot:
    """The requests reported during one slot of the controller's clock."""

    index: int
    count: int = 0
    errors: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))

    def add(self, tally: TallySnapshot) -> None:
        self.count += tally.count
        self.errors += tally.errors
        for i, n in enumerate(tally.buckets[: len(self.buckets)]):
            self.buckets[i] += n


class RequestWindow:
    """One deployment's recent requests, summed over its replicas' reports.

    A report stands for requests that finished during the report period before it arrived (a fraction of a
    second), so the controller's clock at arrival places them in a slot. ``since`` is when the controller
    began watching the deployment: while that is less than a window ago, the rate is taken over the shorter
    span (nothing can have been served before it). Memory stays bounded: one slot per ``slot_s``, those
    older than the window dropped as reports come."""

    def __init__(self, since: float, window_s: float = REQUEST_WINDOW_S, slot_s: float = SLOT_S) -> None:
        self._since = since
        self._window_s = window_s
        self._slot_s = slot_s
        self._slots_shown = max(1, round(window_s / slot_s))
        self._slots: collections.deque[_Slot] = collections.deque()

    def _index(self, now: float) -> int:
        return math.floor(now / self._slot_s)

    def add(self, now: float, tally: TallySnapshot | None) -> None:
        """A replica's report at ``now``; None (it finished nothing since its last report) changes nothing."""
        if tally is None or not tally.count:
            return
        index = self._index(now)
        if not self._slots or index > self._slots[-1].index:
            self._slots.append(_Slot(index))
        self._slots[-1].add(tally)  # a clock that stepped back counts in the newest slot
        while self._slots[0].index < index - self._slots_shown:
            self._slots.popleft()

    def summary(self, now: float) -> RequestSummary | None:
        """The figures over the complete slots of the window ending at ``now``; None if they hold no
        request. Reads only."""
        current = self._index(now)
        shown = [s for s in self._slots if current - self._slots_shown <= s.index < current]
        count = sum(s.count for s in shown)
        if not count:
            return None
        covered = min(self._window_s, current * self._slot_s - self._since)
        if covered <= 0:  # every shown slot began before ``since``: the clock stepped back
            covered = self._window_s
        buckets = [sum(column) for column in zip(*(s.buckets for s in shown))]
        errors = sum(s.errors for s in shown)
        return RequestSummary(
            count=count,
            requests_per_s=round(count / covered, 3),
            p50_ms=round(quantile_ms(buckets, 0.5), 2),
            p99_ms=round(quantile_ms(buckets, 0.99), 2),
            errors=errors,
            error_rate=round(errors / count, 4),
            window_s=round(covered, 3),
        )
