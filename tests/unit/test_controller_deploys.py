"""Deploying, redeploying and scaling through the controller, on fake actors (no Ray)."""

from __future__ import annotations

from fake_cluster import Harness, quiesce, run, spec, until

from serve_nb.core.snapshots import app_key, replicas_key


def test_deploying_a_new_app_starts_its_replicas_and_publishes_them():
    async def scenario():
        h = Harness()
        core = await h.start()
        assert await core.deploy_app("app", "/app", "Model", [spec(num_replicas=2)]) is None
        assert len(h.cluster.live("Model")) == 2
        await h.wait_status("RUNNING")
        info = await h.status()
        assert info.deployments["Model"].replica_states == {"RUNNING": 2}
        assert all(r.initialized for r in h.cluster.live())
        replica_set = h.published(replicas_key("app", "Model"))
        assert sorted(i.replica_id for i in replica_set.replicas) == sorted(r.replica_id for r in h.cluster.live())
        assert h.published("routes") == {"/app": ("app", "Model")}
        detail = h.published(app_key("app"))
        assert detail.status == "RUNNING" and detail.deployments[0].running == 2

    run(scenario())


def test_redeploying_unchanged_code_restarts_nothing():
    async def scenario():
        h = Harness()
        core = await h.start()
        await core.deploy_app("app", "/app", "Model", [spec(num_replicas=2)])
        await h.wait_status("RUNNING")
        before = list(h.cluster.replicas)
        await core.deploy_app("app", "/app", "Model", [spec(num_replicas=2)])
        await h.tick()
        assert h.cluster.replicas == before
        assert not any(r.killed or r.reconfigured_with for r in before)
        assert await h.app_status() == "RUNNING"

    run(scenario())


def test_a_user_config_change_reconfigures_replicas_in_place():
    async def scenario():
        h = Harness()
        core = await h.start()
        await core.deploy_app("app", "/app", "Model", [spec(user_config={"threshold": 1})])
        await h.wait_status("RUNNING")
        [replica] = h.cluster.live()
        await core.deploy_app("app", "/app", "Model", [spec(user_config={"threshold": 2})])
        await until(lambda: replica.reconfigured_with == [{"threshold": 2}], "the reconfigure call")
        await h.wait_status("RUNNING")
        assert h.cluster.replicas == [replica] and not replica.killed
        assert (await h.status()).deployments["Model"].replica_states == {"RUNNING": 1}

    run(scenario())


def test_a_code_change_rolls_new_replicas_up_before_old_ones_stop():
    async def scenario():
        h = Harness()
        core = await h.start()
        await core.deploy_app("app", "/app", "Model", [spec(version="v1", num_replicas=2)])
        await h.wait_status("RUNNING")
        old = h.cluster.live()
        h.cluster.hold_starts = True
        await core.deploy_app("app", "/app", "Model", [spec(version="v2", num_replicas=2)])
        new = [r for r in h.cluster.replicas if r.version == "v2"]
        assert len(new) == 2
        await h.tick()
        assert not any(r.killed or r.drained for r in old), "old replicas must serve until new ones run"
        assert (await h.status()).deployments["Model"].status == "UPDATING"

        new[0].finish_start()
        await until(lambda: sum(r.killed for r in old) == 1, "one old replica to stop")
        assert [r.drained for r in old if r.killed] == [True]
        new[1].finish_start()
        await until(lambda: all(r.killed for r in old), "the other old replica to stop")
        await h.wait_status("RUNNING")
        assert h.cluster.live() == new

    run(scenario())


def test_scale_deployment_changes_the_replica_count_in_place():
    async def scenario():
        h = Harness()
        core = await h.start()
        await core.deploy_app("app", "/app", "Model", [spec(num_replicas=1)])
        await h.wait_status("RUNNING")
        h.cluster.hold_starts = True
        assert await core.scale_deployment("app", "Model", 3) is None
        assert len(h.cluster.live()) == 3
        assert (await h.status()).deployments["Model"].status == "UPSCALING"
        assert await h.app_status() == "RUNNING", "a running app stays RUNNING while it scales"
        for replica in h.cluster.live():
            replica.finish_start()
        await until(lambda: core._apps["app"].deployments["Model"].scaling is None, "the scaling to finish")
        assert (await h.status()).deployments["Model"].status == "HEALTHY"

        assert await core.scale_deployment("app", "Model", 1) is None
        await until(lambda: len(h.cluster.live()) == 1, "two replicas to stop")
        await h.wait_status("RUNNING")
        events = core._apps["app"].deployments["Model"].events
        assert [(e.from_replicas, e.to_replicas, e.reason) for e in events] == [(1, 3, "manual scale"), (3, 1, "manual scale")]
        assert await core.scale_deployment("app", "Model", 0) == "num_replicas must be an integer >= 1, got 0."
        assert await core.scale_deployment("app", "Nope", 2) == "Application 'app' has no deployment 'Nope'."

    run(scenario())


def test_a_deployment_dropped_by_a_redeploy_is_stopped_and_unpublished():
    async def scenario():
        h = Harness()
        core = await h.start()
        await core.deploy_app("app", "/app", "Ingress", [spec("Ingress"), spec("Helper")])
        await h.wait_status("RUNNING")
        await core.deploy_app("app", "/app", "Ingress", [spec("Ingress")])
        await until(lambda: not h.cluster.live("Helper"), "the dropped deployment's replica to stop")
        await quiesce()
        assert list((await h.status()).deployments) == ["Ingress"]
        assert h.published(replicas_key("app", "Helper")) is None

    run(scenario())


def test_a_route_prefix_taken_by_another_app_is_refused():
    async def scenario():
        h = Harness()
        core = await h.start()
        await core.deploy_app("one", "/x", "Model", [spec()])
        error = await core.deploy_app("two", "/x", "Model", [spec()])
        assert error is not None and "already used by application 'one'" in error
        assert "two" not in (await core.get_status()).applications

    run(scenario())


def test_options_ray_refuses_fail_the_deploy_cleanly_and_keep_other_apps():
    async def scenario():
        h = Harness()
        core = await h.start()
        await core.deploy_app("ok", "/ok", "Model", [spec()])
        await h.wait_status("RUNNING", app="ok")
        h.cluster.launch_errors["Bad"] = ValueError(". is not a valid URI")
        assert await core.deploy_app("app", "/app", "Bad", [spec("Bad")]) is None, "the call itself does not fail"
        await h.wait_status("DEPLOY_FAILED")
        message = (await h.status()).message
        assert "Ray could not create a replica actor: ValueError: . is not a valid URI" in message
        await h.tick(5)
        assert h.cluster.live("Bad") == [] and len(h.cluster.live("Model")) == 1
        assert await h.app_status("ok") == "RUNNING"

    run(scenario())
