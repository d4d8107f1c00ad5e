"""A restarted controller recovers from its checkpoint: it adopts running replicas by name and stops strays;
their channel secrets come back from the replicas themselves, never from the checkpoint."""

from __future__ import annotations

import pickle

from fake_cluster import FakeCluster, Harness, quiesce, run, spec

from serve_nb.common.messages import DeploymentSpec
from serve_nb.config import HTTPOptions
from serve_nb.control import checkpoint
from serve_nb.core.log_format import LoggingConfig
from serve_nb.core.snapshots import LOGGING_KEY, STATUS_KEY, app_key
from serve_nb.types import DeploymentID


def test_a_restarted_controller_adopts_running_replicas_and_kills_strays():
    async def scenario():
        cluster = FakeCluster()
        first = Harness(cluster)
        core = await first.start(HTTPOptions(port=8123))
        await core.deploy_app("app", "/app", "Model", [spec(num_replicas=2)])
        await first.wait_status("RUNNING")
        running = cluster.live()

        model: DeploymentSpec = spec()
        stray = cluster.start_replica(DeploymentID("gone", "Old"), "0badc0de", model, None)  # type: ignore[arg-type]
        stray.initialized = True
        half_started = cluster.start_replica(DeploymentID("app", "Model"), "5eed5eed", model, None)  # type: ignore[arg-type]
        before = len(cluster.replicas)

        await first.crash()
        second = Harness(cluster, first.clock)
        restarted = await second.start()
        info = await restarted.ready()
        assert info.http_options.port == 8123, "settings come from the checkpoint"
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


def test_no_replica_secret_is_in_the_checkpoint_and_adopted_replicas_keep_theirs_for_routers():
    async def scenario():
        cluster = FakeCluster()
        first = Harness(cluster)
        core = await first.start()
        await core.deploy_app("app", "/app", "Model", [spec(num_replicas=2)])
        await first.wait_status("RUNNING")
        secrets = {r.replica_id: r.info.secret for r in cluster.live()}
        assert all(len(s) == 32 for s in secrets.values()) and len(set(secrets.values())) == 2
        before = {i.replica_id: i.secret for i in first.published("replicas:app#Model").replicas}
        assert before == secrets, "routers get each replica's own secret"

        blob = cluster.kv[checkpoint.CHECKPOINT_KEY]
        assert not any(s in blob for s in secrets.values())
        assert "token" not in pickle.loads(blob)

        await first.crash()
        second = Harness(cluster, first.clock)
        await second.start()
        await second.wait_status("RUNNING")
        after = {i.replica_id: i.secret for i in second.published("replicas:app#Model").replicas}
        assert after == secrets, "learned again from the adopted replicas over their actor calls"

    run(scenario())


def test_the_secrets_are_published_to_routers_only_never_in_status_or_widgets():
    async def scenario():
        h = Harness()
        core = await h.start()
        await core.deploy_app("app", "/app", "Model", [spec()])
        await h.wait_status("RUNNING")
        [replica] = h.cluster.live()
        assert replica.info.secret in pickle.dumps(h.published("replicas:app#Model"))
        for shown in (h.published(STATUS_KEY), h.published(app_key("app")), await core.get_status()):
            assert replica.info.secret not in pickle.dumps(shown)
        assert replica.info.secret.hex() not in repr(h.published("replicas:app#Model"))
        assert "secret" not in repr(replica.info)

    run(scenario())


def test_a_checkpoint_with_keys_this_version_does_not_know_or_lacks_still_loads():
    saved = checkpoint.Checkpoint(HTTPOptions(port=8124), {})
    blob = pickle.loads(checkpoint.encode(saved))
    with_token = checkpoint.decode(pickle.dumps({**blob, "token": b"0123456789abcdef"}))
    assert with_token == saved, "the cluster token earlier versions saved is ignored"
    assert checkpoint.decode(pickle.dumps({})) == checkpoint.Checkpoint(HTTPOptions(), {})


def test_the_proxies_logging_config_is_published_and_survives_a_controller_restart():
    async def scenario():
        cluster = FakeCluster()
        first = Harness(cluster)
        core = await first.start()
        assert first.published(LOGGING_KEY) == LoggingConfig(), "the defaults until told otherwise"
        quiet = LoggingConfig.parse({"encoding": "JSON", "enable_access_log": False})
        await core.set_logging_config(quiet)
        assert first.published(LOGGING_KEY) == quiet
        await first.crash()
        second = Harness(cluster, first.clock)
        await second.start()
        assert second.published(LOGGING_KEY) == quiet, "kept in the checkpoint"

    run(scenario())
