"""Ray Serve's built-in metrics, by name, and the in-process buffer that records them cheaply.

Dashboards built for Ray Serve query these names and labels, so they are Ray Serve's exactly (Ray adds
the ``ray_`` prefix on export, and Prometheus the ``_total`` suffix of counters). Recording one must cost
next to nothing on the request path: ``MetricsBuffer`` only adds to a dict entry, and an exporter drains
it on an interval (``serve_nb.data.metrics`` hands the totals to Ray). Pure: no Ray, no clock.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass
from enum import Enum

#: Ray Serve's default latency buckets, in milliseconds (1 ms to 10 min).
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1, 2, 5, 10, 20, 50, 100, 200, 300, 400, 500, 1000, 2000, 5000, 10000, 60000, 120000, 300000, 600000,
)
BATCH_UTILIZATION_BUCKETS_PERCENT: tuple[float, ...] = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 100)
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

#: The labels Ray Serve puts on every metric a replica records.
_REPLICA = ("deployment", "replica", "application")


class MetricKind(Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True, eq=False)
class MetricSpec:
    """One metric as exported: tag values are passed as a tuple in ``tag_keys`` order. Compared and hashed
    by identity (each is a module constant): a request records several, and hashing the fields each time
    cost more than the rest of the recording."""

    name: str
    description: str
    kind: MetricKind
    tag_keys: tuple[str, ...]
    boundaries: tuple[float, ...] = ()


def _counter(name: str, description: str, *tags: str) -> MetricSpec:
    return MetricSpec(name, description, MetricKind.COUNTER, tags)


def _gauge(name: str, description: str, *tags: str) -> MetricSpec:
    return MetricSpec(name, description, MetricKind.GAUGE, tags)


def _histogram(name: str, description: str, boundaries: tuple[float, ...], *tags: str) -> MetricSpec:
    return MetricSpec(name, description, MetricKind.HISTOGRAM, tags, boundaries)


# -- the proxy ---------------------------------------------------------------------------------------
HTTP_REQUESTS = _counter("serve_num_http_requests", "The number of HTTP requests processed.",
                         "route", "method", "application", "status_code")
HTTP_ERRORS = _counter("serve_num_http_error_requests", "The number of errored HTTP responses.",
                       "route", "error_code", "method", "application")
HTTP_LATENCY = _histogram("serve_http_request_latency_ms",
                          "The end-to-end latency of HTTP requests (measured from the Serve HTTP proxy).",
                          LATENCY_BUCKETS_MS, "method", "route", "application", "status_code")
HTTP_ONGOING = _gauge("serve_num_ongoing_http_requests", "The number of ongoing requests in this HTTP proxy.",
                      "node_id", "node_ip_address")

# -- routers (handles and the proxy's) ---------------------------------------------------------------
ROUTER_REQUESTS = _counter("serve_num_router_requests", "The number of requests processed by the router.",
                           "deployment", "route", "application", "handle", "actor_id")
ROUTER_QUEUED = _gauge("serve_deployment_queued_queries",
                       "The current number of queries to this deployment waiting to be assigned to a replica.",
                       "deployment", "application", "handle", "actor_id")

# -- replicas ----------------------------------------------------------------------------------------
REPLICA_REQUESTS = _counter("serve_deployment_request_counter",
                            "The number of queries that have been processed in this replica.", *_REPLICA, "route")
REPLICA_ERRORS = _counter("serve_deployment_error_counter",
                          "The number of exceptions that have occurred in this replica.",
                          *_REPLICA, "route", "exception_type")
REPLICA_LATENCY = _histogram("serve_deployment_processing_latency_ms", "The latency for queries to be processed.",
                             LATENCY_BUCKETS_MS, *_REPLICA, "route")
REPLICA_PROCESSING = _gauge("serve_replica_processing_queries", "The current number of queries being processed.",
                            *_REPLICA)
REPLICA_STARTS = _counter("serve_deployment_replica_starts",
                          "The number of times this replica has been restarted due to failure.", *_REPLICA)
REPLICA_HEALTHY = _gauge("serve_deployment_replica_healthy",
                         "Tracks whether this deployment replica is healthy. 1 means healthy, 0 means unhealthy.",
                         *_REPLICA)

# -- @serve.batch ------------------------------------------------------------------------------------
_FN = "function_name"
BATCH_WAIT = _histogram("serve_batch_wait_time_ms", "Time requests waited for batch to fill (in milliseconds).",
                        LATENCY_BUCKETS_MS, *_REPLICA, _FN)
BATCH_EXECUTION = _histogram("serve_batch_execution_time_ms", "Time to execute the batch function (in milliseconds).",
                             LATENCY_BUCKETS_MS, *_REPLICA, _FN)
BATCH_QUEUE = _gauge("serve_batch_queue_length", "Number of requests waiting in the batch queue.", *_REPLICA, _FN)
BATCH_UTILIZATION = _histogram("serve_batch_utilization_percent",
                               "Batch utilization as percentage (actual_batch_size / max_batch_size * 100).",
                               BATCH_UTILIZATION_BUCKETS_PERCENT, *_REPLICA, _FN)
BATCH_SIZE = _histogram("serve_actual_batch_size", "The actual number of requests in each batch.",
                        BATCH_SIZE_BUCKETS, *_REPLICA, _FN)
BATCHES = _counter("serve_batches_processed", "Counter of batches executed.", *_REPLICA, _FN)

# -- @serve.multiplexed ------------------------------------------------------------------------------
MODEL_LOAD_LATENCY = _histogram("serve_multiplexed_model_load_latency_ms", "The time it takes to load a model.",
                                LATENCY_BUCKETS_MS, *_REPLICA)
MODEL_UNLOAD_LATENCY = _histogram("serve_multiplexed_model_unload_latency_ms", "The time it takes to unload a model.",
                                  LATENCY_BUCKETS_MS, *_REPLICA)
MODELS_LOADED = _gauge("serve_num_multiplexed_models", "The number of models loaded on the current replica.",
                       *_REPLICA)
MODEL_REGISTERED = _gauge("serve_registered_multiplexed_model_id", "The model id registered on the current replica.",
                          *_REPLICA, "model_id")
MODEL_REQUESTS = _counter("serve_multiplexed_get_model_requests_counter",
                          "The counter for get model requests on the current replica.", *_REPLICA)
MODEL_UNLOADS = _counter("serve_multiplexed_models_unload_counter",
                         "The counter for unloaded models on the current replica.", *_REPLICA)
MODEL_LOADS = _counter("serve_multiplexed_models_load_counter",
                       "The counter for loaded models on the current replica.", *_REPLICA)

Tags = tuple[str, ...]
Key = tuple[MetricSpec, Tags]


@dataclass(frozen=True)
class Drained:
    """What was recorded since the last drain. A histogram comes as its counts per bucket (the last one above
    every boundary) and the sum of its values."""

    counters: list[tuple[MetricSpec, Tags, float]]
    gauges: list[tuple[MetricSpec, Tags, float]]
    histograms: list[tuple[MetricSpec, Tags, list[int], float]]

    def __bool__(self) -> bool:
        return bool(self.counters or self.gauges or self.histograms)


class HistogramTotals:
    """One histogram series since the process started, as Prometheus exposes a histogram: a cumulative count
    per upper bound ``le`` (the last ``+Inf``), the count and the sum. Exported as those series, a histogram
    costs a few calls per flush however many requests it counted (one Ray call per request cost a replica
    a quarter of its handle throughput)."""

    def __init__(self, spec: MetricSpec) -> None:
        self.bounds = tuple(_le(b) for b in spec.boundaries) + ("+Inf",)
        self._counts = [0] * len(self.bounds)
        self.sum = 0.0

    def add(self, counts: list[int], total: float) -> None:
        for i, n in enumerate(counts):
            self._counts[i] += n
        self.sum += total

    @property
    def count(self) -> int:
        return sum(self._counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, observations ≤ le) for every bound, in order."""
        out, running = [], 0
        for bound, n in zip(self.bounds, self._counts):
            running += n
            out.append((bound, running))
        return out


def _le(bound: float) -> str:
    """A bucket bound as Prometheus clients write ``le``: ``5.0``, ``0.5``."""
    return repr(float(bound))


class SeriesStore:
    """Running totals kept by one writer thread (a proxy's requests, a client's routers, a replica's
    requests), without a lock: the hot path adds to a dict entry and nothing else. Totals only grow; the
    exporter reads copies (``snapshot``) and sends Ray the growth since its last read, so a read that
    lands mid-update is merely a request late, never lost or counted twice."""

    def __init__(self) -> None:
        self.counters: dict[Key, float] = {}
        self.histograms: dict[Key, list[float]] = {}  # per bucket: count, then sum (as MetricsBuffer's)
        self.gauges: dict[Key, float] = {}

    def inc(self, key: Key, value: float = 1.0) -> None:
        counters = self.counters
        counters[key] = counters.get(key, 0.0) + value

    def observe(self, key: Key, value: float) -> None:
        cells = self.histograms.get(key)
        if cells is None:
            cells = self.histograms[key] = [0.0] * (2 * (len(key[0].boundaries) + 1))
        index = 2 * bisect.bisect_left(key[0].boundaries, value)
        cells[index] += 1
        cells[index + 1] += value

    def snapshot(self) -> tuple[dict[Key, float], dict[Key, list[float]], dict[Key, float]]:
        """Copies of the totals (``dict.copy`` runs without letting another thread in)."""
        return self.counters.copy(), {k: v[:] for k, v in self.histograms.copy().items()}, self.gauges.copy()


def growth(store_totals: tuple[dict[Key, float], dict[Key, list[float]], dict[Key, float]],
           last: tuple[dict[Key, float], dict[Key, list[float]], dict[Key, float]]) -> Drained:
    """What a ``SeriesStore`` gained between two snapshots, in the shape ``MetricsBuffer.drain`` hands over."""
    counters, histograms, gauges = store_totals
    old_counters, old_histograms, old_gauges = last
    out_counters = [(key[0], key[1], n - old_counters.get(key, 0.0)) for key, n in counters.items()
                    if n != old_counters.get(key, 0.0)]
    out_histograms = []
    for key, cells in histograms.items():
        before = old_histograms.get(key)
        delta = cells if before is None else [a - b for a, b in zip(cells, before)]
        if any(delta[0::2]):
            out_histograms.append((key[0], key[1], [int(n) for n in delta[0::2]], sum(delta[1::2])))
    out_gauges = [(key[0], key[1], v) for key, v in gauges.items() if old_gauges.get(key) != v]
    return Drained(out_counters, out_gauges, out_histograms)


class MetricsBuffer:
    """Totals per (metric, tag values) since the last ``drain``. Thread-safe: a replica records from its
    event loop and from the threads that run synchronous user methods; an exporter drains from its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[Key, float] = {}
        self._gauges: dict[Key, float] = {}
        self._histograms: dict[Key, list[float]] = {}  # per bucket: count, then sum (2 * (len(boundaries)+1))

    def inc(self, spec: MetricSpec, tags: Tags, value: float = 1.0) -> None:
        key = (spec, tags)
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + value

    def set(self, spec: MetricSpec, tags: Tags, value: float) -> None:
        """A gauge's value now; only the last one before a drain is exported."""
        with self._lock:
            self._gauges[(spec, tags)] = value

    def observe(self, spec: MetricSpec, tags: Tags, value: float) -> None:
        index = bisect.bisect_left(spec.boundaries, value)  # Prometheus buckets are upper-inclusive
        key = (spec, tags)
        with self._lock:
            cells = self._histograms.get(key)
            if cells is None:
                cells = self._histograms[key] = [0.0] * (2 * (len(spec.boundaries) + 1))
            cells[2 * index] += 1
            cells[2 * index + 1] += value

    def drain(self) -> Drained:
        with self._lock:
            counters, self._counters = self._counters, {}
            gauges, self._gauges = self._gauges, {}
            histograms, self._histograms = self._histograms, {}
        return Drained(
            [(spec, tags, n) for (spec, tags), n in counters.items()],
            [(spec, tags, v) for (spec, tags), v in gauges.items()],
            [(spec, tags, [int(n) for n in cells[0::2]], sum(cells[1::2])) for (spec, tags), cells in histograms.items()],
        )


def error_status(status: int) -> bool:
    """A response Ray Serve counts in ``serve_num_http_error_requests``: a 4xx or a 5xx."""
    return status >= 400
