"""A restarted controller recovers from its checkpoint: it adopts running replicas by name and stops strays."""

from __future__ import annotations

from fake_cluster import FakeCluster, Harness, quiesce, run, spec

from serve_nb.common.messages import DeploymentSpec
from serve_nb.config import HTTPOptions
from serve_nb.types import DeploymentID


def test_a_restarted_controller_adopts_running_replicas_and_kills_strays():
    async def scenario():
        cluster = FakeCluster()
        first = Harness(cluster)
        core = await first.start(HTTPOptions(port=8123))
        await core.deploy_app("app", "/app", "Model", [spec(num_replicas=2)])
        await first.wait_status("RUNNING")
        running = cluster.live()
        token = (await core.ready()).token

        model: DeploymentSpec = spec()
        stray = cluster.start_replica(DeploymentID("gone", "Old"), "0badc0de", model, b"", None)  # type: ignore[arg-type]
        stray.initialized = True
        half_started = cluster.start_replica(DeploymentID("app", "Model"), "5eed5eed", model, b"", None)  # type: ignore[arg-type]
        before = len(cluster.replicas)

        await first.crash()
        second = Harness(cluster, first.clock)
        restarted = await second.start()
        info = await restarted.ready()
        assert info.token == token and info.http_options.port == 8123, "settings come from the checkpoint"
        await second.wait_status("RUNNING")
        await quiesce()
        assert len(cluster.replicas) == before, "running replicas were adopted, none started"
        assert all(not r.killed for r in running)
        assert stray.killed, "a replica of an app no longer in the checkpoint is stopped"
        assert half_started.killed, "a replica that never finished starting is stopped (and started afresh)"
        published = {i.replica_id for i in second.published("replicas:app#Model").replicas}
        assert published == {r.replica_id for r in running}

    run(scenario())


def test_a_restarted_controller_keeps_watching_adopted_replicas():
    async def scenario():
        cluster = FakeCluster()
        first = Harness(cluster)
        core = await first.start()
        await core.deploy_app("app", "/app", "Model", [spec()])
        await first.wait_status("RUNNING")
        [replica] = cluster.live()
        await first.crash()
        second = Harness(cluster, first.clock)
        await second.start()
        await second.wait_status("RUNNING")
        replica.die()
        await second.wait_status("UNHEALTHY")
        await second.wait_status("RUNNING")
        assert len(cluster.live()) == 1 and cluster.live()[0] is not replica

    run(scenario())


def test_without_a_checkpoint_the_controller_starts_empty():
    async def scenario():
        h = Harness()
        core = await h.start()
        assert (await core.get_status()).applications == {}

    run(scenario())
