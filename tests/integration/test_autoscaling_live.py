"""Autoscaling with a real controller, and max_ongoing_requests across several callers."""

from __future__ import annotations

import asyncio
import threading

import httpx

import serve_nb as serve
from helpers import URL, make_signal, wait_until


def target_and_events(app: str):
    detail = serve.feed.get(serve.feed.app(app))
    dep = detail.deployments[0]
    return dep.target, list(dep.events), dep.last_decision


def test_cold_start_from_zero_then_scale_up_and_down_with_reasons(serve_instance):
    @serve.deployment(
        num_replicas="auto",
        ray_actor_options={"num_cpus": 0.1},
        autoscaling_config={
            "min_replicas": 0, "max_replicas": 3, "target_ongoing_requests": 1, "upscale_delay_s": 0,
            "downscale_delay_s": 0.5, "downscale_to_zero_delay_s": 1, "look_back_period_s": 0.5,
            "metrics_interval_s": 0.25,
        },
    )
    class Elastic:
        def __init__(self, signal):
            self.signal = signal

        async def __call__(self, request=None):
            await self.signal.wait.remote()
            return "served"

    signal = make_signal()
    h = serve.run(Elastic.bind(signal), name="elastic", route_prefix=None)
    assert serve.status().applications["elastic"].deployments["Elastic"].replica_states == {}
    held = [h.remote() for _ in range(3)]  # no replica yet: held, not dropped
    wait_until(lambda: target_and_events("elastic")[0] == 3, what="scale up to 3 under load")
    target, events, _ = target_and_events("elastic")
    assert events[0].from_replicas == 0 and "cold start" in events[0].reason
    assert all(e.reason for e in events)
    signal.send.remote()
    assert [r.result(timeout_s=60) for r in held] == ["served"] * 3
    wait_until(lambda: target_and_events("elastic")[0] == 0, timeout_s=30, what="scale back to zero")
    _, events, last = target_and_events("elastic")
    downs = [e for e in events if e.to_replicas < e.from_replicas]
    assert downs and downs[-1].from_replicas == 1 and downs[-1].to_replicas == 0  # to zero only from one
    wait_until(lambda: serve.status().applications["elastic"].deployments["Elastic"].replica_states == {})


def test_max_ongoing_requests_holds_per_replica_across_callers(serve_instance):
    @serve.deployment(max_ongoing_requests=2)
    class Counted:
        def __init__(self):
            self.now = 0
            self.peak = 0

        async def __call__(self, request=None):
            self.now += 1
            self.peak = max(self.peak, self.now)
            await asyncio.sleep(0.05)
            self.now -= 1
            return "ok"

        def peak_seen(self):
            return self.peak

    h = serve.run(Counted.bind(), name="counted", route_prefix="/counted")

    handle_results: list[str] = []  # checked below: an assert in the thread would not fail the test

    def via_handle():
        for _ in range(5):
            rs = [h.remote() for _ in range(6)]
            handle_results.extend(r.result(timeout_s=60) for r in rs)

    async def via_http():
        async with httpx.AsyncClient(timeout=60) as client:
            for _ in range(5):
                rs = await asyncio.gather(*(client.get(f"{URL}/counted") for _ in range(6)))
                assert [r.status_code for r in rs] == [200] * 6

    t = threading.Thread(target=via_handle)
    t.start()
    asyncio.run(via_http())
    t.join(60)
    assert handle_results == ["ok"] * 30
    assert h.peak_seen.remote().result() == 2  # two callers, each under its own limit, never 3+ on the replica
