"""The widget's Manual/Adaptive switch: the controller turns a deployment's autoscaling on (moving the target into
the new bounds) or off (to a fixed size) in place, without a redeploy, and says what was wrong with bad settings
(no Ray: the controller's harness with a fake cluster)."""

from __future__ import annotations

from fake_cluster import Harness, run, spec, until


def test_a_fixed_deployment_switches_to_autoscaling_and_back_to_a_fixed_size():
    async def scenario():
        h = Harness()
        core = await h.start()
        await core.deploy_app("app", "/app", "Model", [spec(num_replicas=1)])
        await h.wait_status("RUNNING")
        auto = {"min_replicas": 2, "max_replicas": 4, "target_ongoing_requests": 3}
        assert await core.set_autoscaling("app", "Model", auto) is None
        state = core._apps["app"].deployments["Model"]
        assert state.spec.config.autoscaling_config.max_replicas == 4 and state.spec.config.num_replicas is None
        assert state.target == 2  # moved up into the new bounds
        await until(lambda: len(h.cluster.live()) == 2, "a second replica for min_replicas=2")
        assert (await h.status()).deployments["Model"].target_replicas == 2

        assert await core.set_autoscaling("app", "Model", None, 3) is None
        assert state.spec.config.autoscaling_config is None and state.spec.config.num_replicas == 3
        await until(lambda: len(h.cluster.live()) == 3, "three replicas at the fixed size")
        assert [e.reason for e in state.events] == ["new autoscaling bounds", "manual size"]
        assert await core.scale_deployment("app", "Model", 1) is None  # + / − work again

    run(scenario())


def test_bad_settings_are_refused_with_what_was_wrong():
    async def scenario():
        h = Harness()
        core = await h.start()
        await core.deploy_app("app", "/app", "Model", [spec(num_replicas=1)])
        await h.wait_status("RUNNING")
        error = await core.set_autoscaling("app", "Model", {"min_replicas": 5, "max_replicas": 2})
        assert error.startswith("Bad autoscaling settings:") and "min_replicas (5) must be <= max_replicas (2)" in error
        assert "Bad autoscaling settings" in await core.set_autoscaling("app", "Model", {"bogus": 1})
        assert "num_replicas must be an integer >= 1" in await core.set_autoscaling("app", "Model", None, 0)
        assert await core.set_autoscaling("app", "Nope", None, 2) == "Application 'app' has no deployment 'Nope'."
        assert core._apps["app"].deployments["Model"].spec.config.autoscaling_config is None

    run(scenario())
