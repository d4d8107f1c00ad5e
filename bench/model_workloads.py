"""Model-serving workloads: large numpy arrays through handles, and a batched model under concurrent load.

Like ``workloads.py``, the user code is one source defined against either ``serve`` module, so both
systems run exactly the same deployments.
"""

from __future__ import annotations

import time
from typing import Any

from load import http_load, percentile
from workloads import MB, Bench, define

ARRAYS = '''
import numpy as np


@serve.deployment(max_ongoing_requests=100, ray_actor_options={"num_cpus": 0.5})
class Receiver:
    def __call__(self, arr):
        return arr.nbytes  # small: the reply must not be what is timed


@serve.deployment(max_ongoing_requests=100, ray_actor_options={"num_cpus": 0.5})
class Sender:
    def __init__(self, receiver, sizes_mb):
        self.receiver = receiver
        # made once, here: a call then times the transfer, not the allocation
        self.arrays = {mb: np.ones(mb * 2**20 // 4, dtype=np.float32) for mb in sizes_mb}

    async def __call__(self, mb):
        return await self.receiver.remote(self.arrays[mb])
'''

BATCHED = '''
import numpy as np


@serve.deployment(max_ongoing_requests=128, ray_actor_options={"num_cpus": 0.5})
class Batched:
    def __init__(self):
        self.weights = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
        self.batches = 0
        self.items = 0

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def predict(self, xs):
        self.batches += 1
        self.items += len(xs)
        v = (self.weights @ self.weights)[0]  # per batch: one (256x256)@(256x256) product
        return [float(v @ (v * x)) for x in xs]  # per item: a small vector op

    async def __call__(self, request):
        return str(await self.predict(1.0))

    def stats(self):
        return self.batches, self.items
'''

COMPOSE_SIZES_MB = (1, 10, 50)
DRIVER_SIZES_MB = (10, 50)
BATCH_CONNECTIONS = 64


def median_ms(call: Any, arg: Any, warmup: int, calls: int) -> float:
    """Median wall time of ``call(arg)`` over ``calls`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call(arg)
    latencies = []
    for _ in range(calls):
        start = time.perf_counter()
        call(arg)
        latencies.append(time.perf_counter() - start)
    return percentile(latencies, 0.5) * 1e3


def arrays(b: Bench) -> None:
    """float32 arrays of N MB, Sender → Receiver inside Serve, and driver → Receiver; each call returns
    the received size, checked, so the time is the transfer (and the call), not a reply."""
    warmup, calls = (1, 3) if b.quick else (3, 30)
    source = define(b.serve, ARRAYS)
    receiver = source["Receiver"].bind()
    b.run(source["Sender"].bind(receiver, COMPOSE_SIZES_MB), name="arrays", route_prefix=None)
    sender = b.serve.get_app_handle("arrays")

    def compose(mb: int) -> None:
        assert sender.remote(mb).result() == mb * MB

    for mb in COMPOSE_SIZES_MB:
        b.results[f"array_compose_{mb}mb_ms"] = median_ms(compose, mb, warmup, calls)

    direct = b.serve.get_deployment_handle("Receiver", app_name="arrays")

    def send(arr: Any) -> None:
        assert direct.remote(arr).result() == arr.nbytes

    import numpy as np

    for mb in DRIVER_SIZES_MB:
        arr = np.ones(mb * MB // 4, dtype=np.float32)  # made before timing, as in Sender
        b.results[f"array_driver_{mb}mb_ms"] = median_ms(send, arr, warmup, calls)
    b.serve.delete("arrays")


def batched(b: Bench) -> None:
    """A ``@serve.batch`` model over HTTP at 64 connections; the replica counts its batches, so the
    mean batch size of the measured load (warm-up excluded) is reported beside the throughput."""
    b.run(define(b.serve, BATCHED)["Batched"].bind(), name="batched", route_prefix="/batched")
    url = b.url + "batched"
    handle = b.serve.get_app_handle("batched")
    http_load(url, BATCH_CONNECTIONS, 1.0)  # warm-up: connections, the batch loop
    batches, items = handle.stats.remote().result()
    load = b.load(url, BATCH_CONNECTIONS)
    batches_after, items_after = handle.stats.remote().result()
    b.results.update({
        f"batched_rps_{BATCH_CONNECTIONS}": load["rps"],
        f"batched_p50_ms_{BATCH_CONNECTIONS}": load["p50_ms"],
        f"batched_p99_ms_{BATCH_CONNECTIONS}": load["p99_ms"],
        f"batched_mean_batch_{BATCH_CONNECTIONS}": (items_after - items) / max(1, batches_after - batches),
    })
    b.serve.delete("batched")
