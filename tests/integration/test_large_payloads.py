"""Large arrays between callers and replicas go through Ray's object store: whole, both ways, from the
driver and between deployments; user errors and cancellation as on the channel; nothing left behind."""

from __future__ import annotations

import numpy as np
import pytest

import serve_nb as serve
from helpers import wait_until
from serve_nb import ray_private
from serve_nb.common.serialization import LARGE_PAYLOAD_BYTES

LARGE = LARGE_PAYLOAD_BYTES // 4 + 1  # float32 elements: just over the threshold


@serve.deployment(max_ongoing_requests=4, ray_actor_options={"num_cpus": 0.1})
class Arrays:
    async def __call__(self, arr: np.ndarray) -> tuple[int, float, bool]:
        return arr.nbytes, float(arr.sum()), arr.flags.writeable

    def scaled(self, arr: np.ndarray, by: float) -> np.ndarray:
        return arr * by  # a new large array: the reply goes through the object store too

    def made(self, n: int) -> np.ndarray:
        return np.arange(n, dtype=np.float32)  # a small call with a large reply

    def refuse(self, arr: np.ndarray) -> None:
        raise ValueError(f"no thanks: {arr.shape}")

    async def model_of(self, arr: np.ndarray) -> str:
        return serve.get_multiplexed_model_id()


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Forwarder:
    def __init__(self, arrays) -> None:
        self.arrays = arrays

    async def __call__(self, n: int) -> tuple[int, float, bool]:
        return await self.arrays.remote(np.ones(n, dtype=np.float32))


def test_large_arrays_reach_a_replica_whole_and_large_replies_come_back_whole(serve_instance):
    handle = serve.run(Arrays.bind(), name="arrays", route_prefix=None)
    arr = np.arange(LARGE, dtype=np.float32)
    nbytes, total, writeable = handle.remote(arr).result(timeout_s=60)
    assert (nbytes, total) == (arr.nbytes, float(arr.sum()))
    assert writeable is False  # read in place from shared memory, as Ray Serve hands arrays over
    scaled = handle.scaled.remote(arr, 2.0).result(timeout_s=60)
    assert np.array_equal(scaled, arr * 2.0)
    made = handle.made.remote(LARGE).result(timeout_s=60)  # small call, large reply (kept, then taken)
    assert np.array_equal(made, np.arange(LARGE, dtype=np.float32))
    assert handle.options(multiplexed_model_id="m3").model_of.remote(arr).result(timeout_s=60) == "m3"


def test_a_deployment_passes_a_large_array_to_another(serve_instance):
    handle = serve.run(Forwarder.bind(Arrays.bind()), name="forward", route_prefix=None)
    assert handle.remote(LARGE).result(timeout_s=60)[:2] == (LARGE * 4, float(LARGE))


def test_a_user_error_on_a_large_call_arrives_as_its_own_type_with_the_replicas_traceback(serve_instance):
    handle = serve.run(Arrays.bind(), name="arrays", route_prefix=None)
    with pytest.raises(ValueError, match=r"no thanks: \(%d,\)" % LARGE) as info:
        handle.refuse.remote(np.zeros(LARGE, dtype=np.float32)).result(timeout_s=60)
    assert "refuse" in str(info.value.__cause__)


def test_a_thousand_large_calls_leave_nothing_behind(serve_instance):
    import os

    handle = serve.run(Arrays.bind(), name="arrays", route_prefix=None)
    arr = np.ones(LARGE, dtype=np.float32)
    handle.scaled.remote(arr, 1.0).result(timeout_s=60)
    before = ray_private.object_store_usage()
    assert before is not None
    for _ in range(100):
        # Arguments through shared memory (same machine), replies through Ray's object store.
        for response in [handle.scaled.remote(arr, 2.0) for _ in range(10)]:
            assert response.result(timeout_s=60)[0] == 2.0
    # Ray frees objects shortly after their last reference goes: wait for that, bounded.
    wait_until(lambda: ray_private.object_store_usage()[1] <= before[1] + 2, timeout_s=30,
               what="the object store back to what it held before the 1,000 calls")
    mine = [n for n in os.listdir("/dev/shm") if n.startswith(f"serve_nb-{os.getuid()}-{os.getpid()}-")]
    assert 0 < len(mine) <= 10  # segments are reused once released: at most one per call in flight
