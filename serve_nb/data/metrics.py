"""Ray Serve's metrics, recorded in this process and handed to Ray every ``FLUSH_INTERVAL_S``.

``record()`` is this process's ``MetricsBuffer`` (None with ``SERVE_NB_METRICS=0``): the proxy, routers and
replicas add to it on their request paths, which costs a dict update. A daemon thread drains it and
records the totals with ``ray.util.metrics``, so Ray exports them where it exports every metric: each
node's metrics export port, in Prometheus text format, scraped by the set-up Ray documents for Ray Serve.
Without a connected Ray worker (unit tests, a stopped replica) the totals are dropped, never raised.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable

from serve_nb.core import metrics as m
from serve_nb.core.metrics import Drained, MetricKind, MetricsBuffer, MetricSpec
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


class _Exporter:
    """Ray metric objects, made once per metric, and the thread that feeds them."""

    def __init__(self) -> None:
        self._metrics: dict[MetricSpec, Any] = {}
        self._records: dict[MetricSpec, Callable[..., None]] = {}
        self._export_lock = threading.Lock()
        self._stop = threading.Event()

    def start(self, buffer: MetricsBuffer) -> None:
        def run() -> None:
            while not self._stop.wait(FLUSH_INTERVAL_S):
                self.export(buffer.drain())

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
                for spec, tags, pairs in drained.histograms:
                    record, tag_dict = self._recorder(spec), dict(zip(spec.tag_keys, tags))
                    for value, count in pairs:
                        for _ in range(count):
                            record(value, tags=tag_dict)
            except Exception as exc:  # noqa: BLE001 - no Ray worker here (yet, or any more): drop, never fail
                logger.debug("serve_nb metrics not exported: %s", exc)

    def _recorder(self, spec: MetricSpec) -> Callable[..., None]:
        record = self._records.get(spec)
        if record is None:
            from serve_nb import ray_private

            record = self._records[spec] = ray_private.raw_metric_recorder(self._metric(spec))
        return record

    def _metric(self, spec: MetricSpec) -> Any:
        metric = self._metrics.get(spec)
        if metric is None:
            from ray.util import metrics

            if spec.kind is MetricKind.COUNTER:
                metric = metrics.Counter(spec.name, spec.description, tag_keys=spec.tag_keys)
            elif spec.kind is MetricKind.GAUGE:
                metric = metrics.Gauge(spec.name, spec.description, tag_keys=spec.tag_keys)
            else:
                metric = metrics.Histogram(spec.name, spec.description, list(spec.boundaries), tag_keys=spec.tag_keys)
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
    buffer = record()
    if buffer is not None:
        tags = _replica_tags()
        buffer.observe(m.MODEL_LOAD_LATENCY, tags, took_ms)
        buffer.inc(m.MODEL_LOADS, tags)
        buffer.set(m.MODELS_LOADED, tags, models_now)
        buffer.set(m.MODEL_REGISTERED, (*tags, model_id), 1.0)


def model_unloaded(model_id: str, took_ms: float, models_now: int) -> None:
    buffer = record()
    if buffer is not None:
        tags = _replica_tags()
        buffer.observe(m.MODEL_UNLOAD_LATENCY, tags, took_ms)
        buffer.inc(m.MODEL_UNLOADS, tags)
        buffer.set(m.MODELS_LOADED, tags, models_now)
        buffer.set(m.MODEL_REGISTERED, (*tags, model_id), 0.0)
