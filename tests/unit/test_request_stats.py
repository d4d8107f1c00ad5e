"""serve_nb.core.request_stats: what replicas count, and the per-deployment window the controller reads the live
figures (requests/s, p50/p99, errors) from. Time is passed in, so every case runs on made-up clocks."""

from __future__ import annotations

import bisect
import random

import pytest

from serve_nb.core.metrics import LATENCY_BUCKETS_MS
from serve_nb.core.request_stats import (
    REQUEST_WINDOW_S,
    RequestTally,
    RequestWindow,
    TallySnapshot,
    quantile_ms,
)

SLOTS = len(LATENCY_BUCKETS_MS) + 1


def tally(*latencies_ms: float, errors: int = 0) -> TallySnapshot:
    """What a replica would report after finishing requests of these latencies (the first ``errors`` failed)."""
    counter = RequestTally()
    for i, latency in enumerate(latencies_ms):
        counter.add(latency, i < errors)
    snapshot = counter.drain()
    assert snapshot is not None
    return snapshot


def buckets(**counts: int) -> list[int]:
    """Bucket counts by upper bound, e.g. ``buckets(le10=98, le200=2)``; ``over=`` those above every bound."""
    out = [0] * SLOTS
    for key, n in counts.items():
        out[-1 if key == "over" else LATENCY_BUCKETS_MS.index(float(key[2:]))] += n
    return out


# --------------------------------------------------------------------------- RequestTally


def test_a_tally_hands_over_what_it_counted_once():
    counter = RequestTally()
    counter.add(3.0, False)
    counter.add(150.0, True)
    snapshot = counter.drain()
    assert snapshot == TallySnapshot(2, 1, tuple(buckets(le5=1, le200=1)), 153.0)
    assert counter.drain() is None


def test_a_latency_on_a_boundary_counts_in_the_bucket_it_closes():
    assert tally(5.0).buckets == tuple(buckets(le5=1))
    assert tally(5.01).buckets == tuple(buckets(le10=1))
    assert tally(700_000.0).buckets == tuple(buckets(over=1))


# --------------------------------------------------------------------------- quantile_ms


def test_p99_comes_from_the_bucket_holding_the_99th_request():
    # 98 requests in (5, 10] ms, 2 in (100, 200] ms: the 99th is the first of the slow two, halfway through them.
    assert quantile_ms(buckets(le10=98, le200=2), 0.99) == pytest.approx(150.0)
    assert quantile_ms(buckets(le10=98, le200=2), 0.5) == pytest.approx(5 + 5 * 50 / 98)


def test_the_first_bucket_is_interpolated_from_zero():
    assert quantile_ms(buckets(le1=4), 0.5) == pytest.approx(0.5)


def test_a_percentile_beyond_the_last_boundary_reads_as_that_boundary():
    assert quantile_ms(buckets(le10=1, over=99), 0.5) == LATENCY_BUCKETS_MS[-1]


def test_nothing_counted_has_no_latency():
    assert quantile_ms([0] * SLOTS, 0.99) == 0.0


@pytest.mark.parametrize("q", [0.5, 0.99])
def test_an_estimate_lies_in_the_bucket_of_the_true_percentile(q):
    """The documented precision: off by at most the width of the bucket that holds the ranked request."""
    rng = random.Random(7)
    for _ in range(200):
        latencies = sorted(rng.lognormvariate(rng.uniform(0, 7), rng.uniform(0.1, 2)) for _ in range(rng.randint(1, 300)))
        true = latencies[max(0, int(q * len(latencies) + 0.999999) - 1)]  # the request of rank ceil(q * n)
        estimate = quantile_ms(tally(*latencies).buckets, q)
        index = bisect.bisect_left(LATENCY_BUCKETS_MS, true)
        lower = LATENCY_BUCKETS_MS[index - 1] if index else 0.0
        upper = LATENCY_BUCKETS_MS[index] if index < len(LATENCY_BUCKETS_MS) else LATENCY_BUCKETS_MS[-1]
        assert lower <= estimate <= upper, (true, estimate)


# --------------------------------------------------------------------------- RequestWindow


def test_a_report_shows_once_its_second_is_complete():
    window = RequestWindow(since=0.0)
    window.add(1000.2, tally(3.0, 3.0))
    assert window.summary(1000.9) is None, "the slot still fills: its figures would change at every report"
    summary = window.summary(1001.0)
    assert summary is not None and summary.count == 2


def test_reports_from_several_replicas_add_up_before_percentiles_are_read():
    window = RequestWindow(since=0.0)
    window.add(1000.1, tally(*[8.0] * 98))
    window.add(1000.3, tally(150.0, 150.0, errors=1))
    summary = window.summary(1001.0)
    assert summary is not None
    assert (summary.count, summary.errors, summary.error_rate) == (100, 1, 0.01)
    assert summary.p99_ms == 150.0
    assert 5.0 <= summary.p50_ms <= 10.0


def test_the_rate_is_averaged_over_the_window_once_the_deployment_is_older_than_it():
    window = RequestWindow(since=0.0)
    for second in range(940, 1000):
        window.add(second + 0.5, tally(*[2.0] * 3))
    summary = window.summary(1000.0)
    assert summary is not None
    assert (summary.count, summary.window_s, summary.requests_per_s) == (180, REQUEST_WINDOW_S, 3.0)


def test_a_young_deployments_rate_is_over_the_time_it_has_been_watched():
    window = RequestWindow(since=995.0)
    window.add(998.5, tally(*[2.0] * 10))
    summary = window.summary(1000.0)
    assert summary is not None
    assert (summary.window_s, summary.requests_per_s) == (5.0, 2.0)


def test_the_figures_decay_to_none_once_the_window_slid_past_the_last_report():
    window = RequestWindow(since=0.0)
    window.add(1000.2, tally(4.0, errors=1))
    assert window.summary(1001.0) is not None
    assert window.summary(1060.9) is not None, "still within the last 60 complete seconds"
    assert window.summary(1061.0) is None


def test_only_requests_of_the_last_minute_count():
    window = RequestWindow(since=0.0)
    window.add(1000.5, tally(*[600.0] * 50, errors=50))  # a bad burst, long ago
    window.add(1070.5, tally(2.0, 2.0))
    summary = window.summary(1071.0)
    assert summary is not None
    assert (summary.count, summary.errors) == (2, 0)
    assert summary.p99_ms <= 2.0


def test_memory_stays_one_slot_per_second_of_the_window():
    window = RequestWindow(since=0.0)
    for tenth in range(10_000):
        window.add(1000 + tenth / 10, tally(1.0))
    assert len(window._slots) <= REQUEST_WINDOW_S + 1
    summary = window.summary(2000.0)
    assert summary is not None and summary.count == 600


def test_an_empty_report_changes_nothing():
    window = RequestWindow(since=0.0)
    window.add(1000.0, None)
    window.add(1000.0, TallySnapshot(0, 0, (0,) * SLOTS, 0.0))
    assert window.summary(1001.0) is None


def test_a_clock_that_stepped_back_counts_the_report_in_the_newest_slot():
    window = RequestWindow(since=0.0)
    window.add(1010.5, tally(1.0))
    window.add(1009.5, tally(1.0))
    summary = window.summary(1011.0)
    assert summary is not None and summary.count == 2


def test_a_summary_reads_only():
    window = RequestWindow(since=0.0)
    window.add(1000.5, tally(1.0))
    assert window.summary(5000.0) is None
    assert window.summary(1001.0) is not None, "reading at a later time dropped nothing"
