"""The controller carries out autoscaling decisions (the policy itself is tested in test_autoscaling)."""

from __future__ import annotations

from fake_cluster import Harness, run, spec, until

from serve_nb.config import AutoscalingConfig


def test_requests_waiting_with_no_replica_start_one_at_once():
    async def scenario():
        h = Harness()
        core = await h.start()
        auto = AutoscalingConfig(min_replicas=0, initial_replicas=0, max_replicas=3, upscale_delay_s=30.0)
        await core.deploy_app("app", "/app", "Model", [spec(autoscaling=auto)])
        await h.wait_status("RUNNING")
        assert h.cluster.replicas == []
        await core.record_queued("app", "Model", "caller-1", 1)
        await until(lambda: len(h.cluster.live()) == 1, "a cold start")
        state = core._apps["app"].deployments["Model"]
        [event] = state.events
        assert (event.from_replicas, event.to_replicas) == (0, 1) and "cold start" in event.reason
        await h.wait_status("RUNNING")

    run(scenario())


def test_sustained_load_scales_up_only_after_the_upscale_delay():
    async def scenario():
        h = Harness()
        core = await h.start()
        auto = AutoscalingConfig(min_replicas=1, max_replicas=3, target_ongoing_requests=1.0, upscale_delay_s=5.0,
                                 look_back_period_s=2.0)
        await core.deploy_app("app", "/app", "Model", [spec(autoscaling=auto)])
        await h.wait_status("RUNNING")
        [replica] = h.cluster.live()
        await core.record_replica_metrics("app", "Model", replica.replica_id, 3, ["hello"])
        for _ in range(8):  # 4 s of load: not yet
            await h.tick(0.5)
        assert len(h.cluster.live()) == 1
        for _ in range(4):
            await h.tick(0.5)
        assert len(h.cluster.live()) == 3
        assert core._apps["app"].logs[-1].endswith(f"Model/{replica.replica_id[:6]} | hello")

    run(scenario())
