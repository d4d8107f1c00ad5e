"""Constructors that take long or never return: named in status, bounded by initialization_timeout_s,
and cancelled by deleting the app (on fake actors, no Ray)."""

from __future__ import annotations

from fake_cluster import Harness, quiesce, run, spec, until

from serve_nb.core.snapshots import replicas_key
from serve_nb.core.status import SLOW_INIT_AFTER_S
from serve_nb.types import ReplicaState


def test_a_replica_long_in_init_is_named_in_the_status_and_the_replica_set():
    async def scenario():
        h = Harness()
        core = await h.start()
        h.cluster.hold_starts = True
        await core.deploy_app("app", "/app", "Model", [spec()])
        await quiesce()  # placed: its __init__ starts now
        [replica] = h.cluster.live()
        await h.tick(SLOW_INIT_AFTER_S - 1)
        assert "__init__" not in (await h.status()).deployments["Model"].message
        await h.tick(3)
        info = (await h.status()).deployments["Model"]
        assert info.initializing_for_s == {replica.replica_id: 5.0}
        assert f"Replica {replica.replica_id} has been in __init__ for 5 s." in info.message
        published = h.published("status").applications["app"].deployments["Model"]
        assert published.initializing_for_s == {replica.replica_id: 5.0}, "serve.run learns it from the feed"
        waiting = h.published(replicas_key("app", "Model")).waiting
        assert waiting == f"Replica {replica.replica_id} has been in __init__ for 5 s."

        replica.finish_start()
        await h.wait_status("RUNNING")
        assert (await h.status()).deployments["Model"].initializing_for_s == {}
        assert h.published(replicas_key("app", "Model")).waiting == ""

    run(scenario())


def test_initialization_timeout_fails_the_deploy_and_kills_every_starting_replica():
    async def scenario():
        h = Harness()
        core = await h.start()
        h.cluster.hold_starts = True
        await core.deploy_app("app", "/app", "Model", [spec(num_replicas=2, initialization_timeout_s=10.0)])
        await quiesce()
        replicas = h.cluster.live()
        await h.tick(9)
        assert not any(r.killed for r in replicas)
        await h.tick(2)
        await h.wait_status("DEPLOY_FAILED")
        assert all(r.killed for r in replicas)
        message = (await h.status()).message
        assert "was still in __init__ after 11 s, past initialization_timeout_s=10, and was killed" in message
        await h.tick(30)
        assert h.cluster.live() == [], "a failed version is not started again until it is redeployed"
        unavailable = h.published(replicas_key("app", "Model")).unavailable
        assert "initialization_timeout_s" in unavailable, "requests are answered at once with the reason"

    run(scenario())


def test_initialization_timeout_of_an_update_keeps_the_old_version_serving():
    async def scenario():
        h = Harness()
        core = await h.start()
        await core.deploy_app("app", "/app", "Model", [spec(version="v1")])
        await h.wait_status("RUNNING")
        [old] = h.cluster.live()
        h.cluster.hold_starts = True
        await core.deploy_app("app", "/app", "Model", [spec(version="v2", initialization_timeout_s=5.0)])
        await quiesce()
        [new] = [r for r in h.cluster.live() if r.version == "v2"]
        await h.tick(6)
        await h.wait_status("DEPLOY_FAILED")
        assert new.killed and not old.killed
        served = h.published(replicas_key("app", "Model")).replicas
        assert [i.replica_id for i in served] == [old.replica_id]

    run(scenario())


def test_the_timeout_counts_from_placement_not_from_waiting_for_resources():
    async def scenario():
        h = Harness()
        core = await h.start()
        h.cluster.hold_starts = True
        await core.deploy_app("app", "/app", "Model", [spec(initialization_timeout_s=5.0)])
        state = core._apps["app"].deployments["Model"]
        [record] = state.replicas.values()
        record.placed, record.placed_at = False, 0.0  # as if Ray had not placed it yet
        await h.tick(20)
        assert record.state == ReplicaState.STARTING and not record.actor.killed
        record.on_placed(h.clock.time())
        await h.tick(6)
        await h.wait_status("DEPLOY_FAILED")

    run(scenario())


def test_deleting_an_app_kills_replicas_still_in_init_at_once():
    async def scenario():
        h = Harness()
        core = await h.start()
        h.cluster.hold_starts = True
        await core.deploy_app("app", "/app", "Model", [spec(num_replicas=2)])
        replicas = h.cluster.live()
        await h.tick(60)
        await core.delete_apps(["app"])
        await quiesce()
        assert all(r.killed for r in replicas), "no drain and no wait for __init__ to return"
        assert not any(r.drained for r in replicas)
        await until(lambda: "app" not in h.published("status").applications, "the app to be gone")

    run(scenario())
