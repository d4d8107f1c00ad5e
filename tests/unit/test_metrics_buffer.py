"""Recording Ray Serve's metrics in process: exact totals per label set, histograms replayed exactly."""

from __future__ import annotations

import threading

import pytest

from serve_nb.core import metrics as m
from serve_nb.core.metrics import HistogramTotals, MetricKind, MetricsBuffer


def test_counters_add_up_per_label_values_and_reset_on_drain():
    buffer = MetricsBuffer()
    for _ in range(3):
        buffer.inc(m.HTTP_REQUESTS, ("/a", "GET", "app", "200"))
    buffer.inc(m.HTTP_REQUESTS, ("/a", "GET", "app", "500"), 2)
    drained = buffer.drain()
    assert sorted(drained.counters) == [
        (m.HTTP_REQUESTS, ("/a", "GET", "app", "200"), 3.0),
        (m.HTTP_REQUESTS, ("/a", "GET", "app", "500"), 2.0),
    ]
    assert not buffer.drain(), "a drain hands over what was recorded once"


def test_a_gauge_exports_its_last_value_only():
    buffer = MetricsBuffer()
    for value in (1, 4, 2):
        buffer.set(m.REPLICA_PROCESSING, ("D", "r1", "app"), value)
    assert buffer.drain().gauges == [(m.REPLICA_PROCESSING, ("D", "r1", "app"), 2)]


def test_a_histogram_drains_as_counts_per_bucket_and_its_sum():
    buffer = MetricsBuffer()
    values = [0.5, 0.7, 1.0, 3.0, 4.0, 700_000.0]  # 1.0 is in the ≤1 bucket: Prometheus buckets include their bound
    for v in values:
        buffer.observe(m.HTTP_LATENCY, ("GET", "/a", "app", "200"), v)
    [(spec, tags, counts, total)] = buffer.drain().histograms
    assert spec is m.HTTP_LATENCY and tags == ("GET", "/a", "app", "200")
    assert counts[:3] == [3, 0, 2] and counts[-1] == 1 and sum(counts) == 6, "above the last bound: its own bucket"
    assert total == pytest.approx(sum(values))


def test_histogram_totals_read_as_prometheus_cumulative_buckets_across_drains():
    totals = HistogramTotals(m.HTTP_LATENCY)
    buffer = MetricsBuffer()
    for batch in ([0.5, 3.0], [3.0, 1e9]):
        for v in batch:
            buffer.observe(m.HTTP_LATENCY, ("GET", "/a", "app", "200"), v)
        [(_, _, counts, total)] = buffer.drain().histograms
        totals.add(counts, total)
    series = dict(totals.cumulative())
    assert (series["1.0"], series["2.0"], series["5.0"], series["600000.0"], series["+Inf"]) == (1, 1, 3, 3, 4)
    assert list(series) == [*(repr(float(b)) for b in m.LATENCY_BUCKETS_MS), "+Inf"]
    assert totals.count == 4 and totals.sum == pytest.approx(0.5 + 3.0 + 3.0 + 1e9)


def test_recording_from_many_threads_loses_nothing():
    buffer = MetricsBuffer()

    def work() -> None:
        for _ in range(5000):
            buffer.inc(m.REPLICA_REQUESTS, ("D", "r", "app", "/"))
            buffer.observe(m.REPLICA_LATENCY, ("D", "r", "app", "/"), 2.0)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    drained = buffer.drain()
    assert drained.counters == [(m.REPLICA_REQUESTS, ("D", "r", "app", "/"), 20000.0)]
    assert sum(drained.histograms[0][2]) == 20000 and drained.histograms[0][3] == pytest.approx(40000.0)


def test_every_metric_has_ray_serves_labels_and_kind():
    assert m.HTTP_REQUESTS.tag_keys == ("route", "method", "application", "status_code")
    assert m.HTTP_ERRORS.tag_keys == ("route", "error_code", "method", "application")
    assert m.ROUTER_REQUESTS.tag_keys == ("deployment", "route", "application", "handle", "actor_id")
    for spec in (m.REPLICA_REQUESTS, m.REPLICA_LATENCY, m.REPLICA_ERRORS):
        assert spec.tag_keys[:3] == ("deployment", "replica", "application") and "route" in spec.tag_keys
    assert m.REPLICA_LATENCY.kind is MetricKind.HISTOGRAM and m.REPLICA_LATENCY.boundaries[0] == 1
    assert m.HTTP_ONGOING.kind is MetricKind.GAUGE and m.REPLICA_STARTS.kind is MetricKind.COUNTER


@pytest.mark.parametrize(("status", "error"), [(200, False), (307, False), (404, True), (503, True)])
def test_4xx_and_5xx_count_as_http_errors(status, error):
    assert m.error_status(status) is error


def test_a_stores_growth_is_sent_once_whenever_it_is_read():
    from serve_nb.core.metrics import SeriesStore, growth

    store = SeriesStore()
    key, latency = (m.ROUTER_REQUESTS, ("D", "/", "app", "h", "")), (m.REPLICA_LATENCY, ("D", "r", "app", "/"))
    store.inc(key)
    store.observe(latency, 3.0)
    first = store.snapshot()
    sent = growth(first, ({}, {}, {}))
    assert sent.counters == [(m.ROUTER_REQUESTS, key[1], 1.0)] and sum(sent.histograms[0][2]) == 1
    assert not growth(store.snapshot(), first), "nothing new: nothing sent"
    store.inc(key, 2)
    store.observe(latency, 30.0)
    store.gauges[(m.ROUTER_QUEUED, ("D", "app", "h", ""))] = 4
    again = growth(store.snapshot(), first)
    assert again.counters == [(m.ROUTER_REQUESTS, key[1], 2.0)]
    assert sum(again.histograms[0][2]) == 1 and again.histograms[0][3] == 30.0
    assert again.gauges == [(m.ROUTER_QUEUED, ("D", "app", "h", ""), 4)]
