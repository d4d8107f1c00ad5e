"""What replicas report about multiplexed models and batches reaches routers and the app widget."""

from __future__ import annotations

from fake_cluster import Harness, run, spec, until

from serve_nb.core.snapshots import app_key, replicas_key


def test_a_replicas_models_reach_routers_at_once_and_the_widget_shows_them_with_batch_sizes():
    async def scenario():
        h = Harness()
        core = await h.start()
        await core.deploy_app("app", "/app", "Model", [spec(num_replicas=2)])
        await h.wait_status("RUNNING")
        first, second = sorted(h.cluster.live(), key=lambda r: r.replica_id)
        before = h.published(replicas_key("app", "Model"))
        assert before.models == {}
        await core.record_replica_metrics("app", "Model", first.replica_id, 1, [], ("m1",), [4, 2])
        # No reconcile tick in between: a change of models is published with the report itself.
        assert h.published(replicas_key("app", "Model")).models == {first.replica_id: ("m1",)}
        await core.record_replica_metrics("app", "Model", second.replica_id, 0, [], ("m2", "m3"), [1])
        await core.record_replica_metrics("app", "Model", first.replica_id, 0, [], (), [])  # m1 evicted
        assert h.published(replicas_key("app", "Model")).models == {second.replica_id: ("m2", "m3")}

        def widget_caught_up() -> bool:
            detail = h.published(app_key("app"))
            return bool(detail and detail.deployments and detail.deployments[0].batch_sizes)

        await until(widget_caught_up, "the app detail to carry the batch sizes")
        [dep] = h.published(app_key("app")).deployments
        assert dep.batch_sizes == (4, 2, 1)
        assert {r.replica_id: r.models for r in dep.replicas} == {first.replica_id: (), second.replica_id: ("m2", "m3")}

    run(scenario())


def test_a_report_from_a_replica_the_controller_no_longer_tracks_changes_nothing():
    async def scenario():
        h = Harness()
        core = await h.start()
        await core.deploy_app("app", "/app", "Model", [spec()])
        await h.wait_status("RUNNING")
        await core.record_replica_metrics("app", "Model", "gone-replica", 3, [], ("m1",), [5])
        await core.record_replica_metrics("app", "Nope", "gone-replica", 3, [], ("m1",), [5])
        assert h.published(replicas_key("app", "Model")).models == {}

    run(scenario())
