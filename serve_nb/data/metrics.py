"""Ray Serve's metrics, recorded in this process and handed to Ray every ``FLUSH_INTERVAL_S``.

``record()`` is this process's ``MetricsBuffer`` (None with ``SERVE_NB_METRICS=0``): the proxy, routers and
replicas add to it on their request paths, which costs a dict update. A daemon thread drains it and
records the totals with ``ray.util.metrics``, so Ray exports them where it exports every metric: each
node's metrics export port, in Prometheus text format, scraped by the set-up Ray documents for Ray Serve.
Counters go out as Ray counters (``_total``), gauges as gauges; a latency histogram goes out as the series
Prometheus reads a histogram as (``_bucket{le=...}``, ``_count``, ``_sum``), each set from the running
totals, because replaying every observation through Ray's Histogram cost a call per request.
Without a connected Ray worker (unit tests, a stopped replica) the totals are dropped, never raised.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any

from serve_nb.core import metrics as m
from serve_nb.core.metrics import (
    Drained, HistogramTotals, MetricKind, MetricsBuffer, MetricSpec, SeriesStore, growth,
)
from serve_nb.data.context import current_replica_context

logger = logging.getLogger(__name__)

#: How often recorded totals go to Ray (Ray itself reports to its agent every few seconds).
FLUSH_INTERVAL_S = 1.0

_lock = threading.Lock()
_buffer: MetricsBuffer | None = None
_exporter: "_Exporter | None" = None


def enabled() -> bool:
    """Off with ``SERVE_NB_METRICS=0`` (read when a process first records)."""
    return os.environ.get("SERVE_NB_METRICS", "1").strip().lower() not in ("0", "false", "no", "off")


def store() -> SeriesStore | None:
    """A new ``SeriesStore`` for one writer thread's hot path, exported with the process's totals; None when
    metrics are off."""
    if record() is None or _exporter is None:
        return None
    new = SeriesStore()
    _exporter.add_store(new)
    return new


def record() -> MetricsBuffer | None:
    """This process's buffer (started with its exporter on first use), or None when metrics are off."""
    global _buffer, _exporter
    if _buffer is not None or _exporter is not None:
        return _buffer
    with _lock:
        if _exporter is None:
            _exporter = _Exporter()
            if enabled():
                _buffer = MetricsBuffer()
                _exporter.start(_buffer)
    return _buffer


def flush() -> None:
    """Hand what is recorded to Ray now (a stopping replica's last requests are not lost)."""
    if _exporter is not None and _buffer is not None:
        _exporter.export(_buffer.drain())
        _exporter.export_stores()


class _Exporter:
    """Ray metric objects, made once per metric, and the thread that feeds them."""

    def __init__(self) -> None:
        self._metrics: dict[MetricSpec, Any] = {}  # counters and gauges
        self._histogram_series: dict[tuple[MetricSpec, str], Any] = {}  # a histogram's _bucket, _count, _sum
        self._totals: dict[tuple[MetricSpec, tuple[str, ...]], HistogramTotals] = {}
        self._export_lock = threading.Lock()
        self._stop = threading.Event()
        # Each store, with the totals it had when last exported (weakly: a closed router's store goes).
        self._stores_lock = threading.Lock()
        self._stores: "weakref.WeakKeyDictionary[SeriesStore, Any]" = weakref.WeakKeyDictionary()

    def add_store(self, store: SeriesStore) -> None:
        with self._stores_lock:
            self._stores[store] = ({}, {}, {})

    def export_stores(self) -> None:
        """What each store gained since the last export (one exporter at a time: none is sent twice)."""
        with self._stores_lock:
            for store, last in list(self._stores.items()):
                now = store.snapshot()
                self.export(growth(now, last))
                self._stores[store] = now

    def start(self, buffer: MetricsBuffer) -> None:
        def run() -> None:
            while not self._stop.wait(FLUSH_INTERVAL_S):
                self.export(buffer.drain())
                self.export_stores()

        threading.Thread(target=run, name="serve_nb-metrics", daemon=True).start()

    def export(self, drained: Drained) -> None:
        if not drained:
            return
        with self._export_lock:  # the thread and flush() may export at once
            try:
                for spec, tags, value in drained.counters:
                    self._metric(spec).inc(value, tags=dict(zip(spec.tag_keys, tags)))
                for spec, tags, value in drained.gauges:
                    self._metric(spec).set(value, tags=dict(zip(spec.tag_keys, tags)))
                for spec, tags, counts, total in drained.histograms:
                    self._export_histogram(spec, tags, counts, total)
            except Exception as exc:  # noqa: BLE001 - no Ray worker here (yet, or any more): drop, never fail
                logger.debug("serve_nb metrics not exported: %s", exc)

    def _export_histogram(self, spec: MetricSpec, tags: tuple[str, ...], counts: list[int], total: float) -> None:
        """A histogram as the series Prometheus reads one as (``_bucket`` per ``le``, ``_count``, ``_sum``), set
        from this process's running totals: ``histogram_quantile`` over ``rate(..._bucket)`` works as for Ray
        Serve's, and a flush costs the same for one request or a million."""
        key = (spec, tags)
        totals = self._totals.get(key)
        if totals is None:
            totals = self._totals[key] = HistogramTotals(spec)
        totals.add(counts, total)
        tag_dict = dict(zip(spec.tag_keys, tags))
        bucket = self._series(spec, "_bucket", ("le",))
        for le, cumulative in totals.cumulative():
            bucket.set(cumulative, tags={**tag_dict, "le": le})
        self._series(spec, "_count").set(totals.count, tags=tag_dict)
        self._series(spec, "_sum").set(totals.sum, tags=tag_dict)

    def _series(self, spec: MetricSpec, suffix: str, extra_keys: tuple[str, ...] = ()) -> Any:
        gauge = self._histogram_series.get((spec, suffix))
        if gauge is None:
            from ray.util import metrics

            gauge = metrics.Gauge(spec.name + suffix, f"{spec.description} ({suffix[1:]} of the histogram)",
                                  tag_keys=spec.tag_keys + extra_keys)
            self._histogram_series[(spec, suffix)] = gauge
        return gauge

    def _metric(self, spec: MetricSpec) -> Any:
        metric = self._metrics.get(spec)
        if metric is None:
            from ray.util import metrics

            if spec.kind is MetricKind.COUNTER:
                metric = metrics.Counter(spec.name, spec.description, tag_keys=spec.tag_keys)
            else:
                metric = metrics.Gauge(spec.name, spec.description, tag_keys=spec.tag_keys)
            self._metrics[spec] = metric
        return metric


# -- what @serve.batch and @serve.multiplexed record (in replicas: their tags name the replica) --------

def _replica_tags() -> tuple[str, str, str]:
    ctx = current_replica_context()
    return (ctx.deployment, ctx.replica_id, ctx.app_name) if ctx is not None else ("", "", "")


def batch_ran(function_name: str, size: int, max_size: int, waited_ms: float, ran_ms: float, still_queued: int) -> None:
    """One ``@serve.batch`` batch finished: Ray Serve's batching metrics."""
    buffer = record()
    if buffer is None:
        return
    tags = (*_replica_tags(), function_name)
    buffer.observe(m.BATCH_WAIT, tags, waited_ms)
    buffer.observe(m.BATCH_EXECUTION, tags, ran_ms)
    buffer.observe(m.BATCH_SIZE, tags, size)
    buffer.observe(m.BATCH_UTILIZATION, tags, 100.0 * size / max_size if max_size else 0.0)
    buffer.set(m.BATCH_QUEUE, tags, still_queued)
    buffer.inc(m.BATCHES, tags)


def model_requested() -> None:
    buffer = record()
    if buffer is not None:
        buffer.inc(m.MODEL_REQUESTS, _replica_tags())


def model_loaded(model_id: str, took_ms: float, models_now: int) -> None:
    _model_event(model_id, took_ms, models_now, loaded=True)


def model_unloaded(model_id: str, took_ms: float, models_now: int) -> None:
    _model_event(model_id, took_ms, models_now, loaded=False)


def _model_event(model_id: str, took_ms: float, models_now: int, loaded: bool) -> None:
    """A model was loaded or unloaded in ``took_ms``; ``models_now`` are held after it."""
    buffer = record()
    if buffer is not None:
        tags = _replica_tags()
        buffer.observe(m.MODEL_LOAD_LATENCY if loaded else m.MODEL_UNLOAD_LATENCY, tags, took_ms)
        buffer.inc(m.MODEL_LOADS if loaded else m.MODEL_UNLOADS, tags)
        buffer.set(m.MODELS_LOADED, tags, models_now)
        buffer.set(m.MODEL_REGISTERED, (*tags, model_id), 1.0 if loaded else 0.0)
