"""Reading the status changes nothing; the reconcile step is what applies what a status implies."""

from __future__ import annotations

from fake_cluster import Harness, run, spec

from serve_nb.core.status import Scaling


def test_reading_the_status_twice_changes_nothing_and_the_next_step_settles():
    async def scenario():
        h = Harness()
        core = await h.start()
        await core.deploy_app("app", "/app", "Model", [spec(num_replicas=2)])
        await h.wait_status("RUNNING")
        app = core._apps["app"]
        state = app.deployments["Model"]
        # As right after a scaling decision was carried out and before the loop's next step:
        state.scaling = Scaling.UP
        app.was_running = False

        first = await core.get_status()
        second = await core.get_status()
        assert first == second
        assert first.applications["app"].status == "RUNNING"
        assert state.scaling is Scaling.UP and app.was_running is False, "a getter must not change state"

        await h.tick()
        assert state.scaling is None, "the step ends a scaling that reached its target"
        assert app.was_running is True, "the step remembers that the app ran"

    run(scenario())


def test_a_running_app_stays_running_while_it_scales_but_a_new_one_is_deploying():
    async def scenario():
        h = Harness()
        core = await h.start()
        h.cluster.hold_starts = True
        await core.deploy_app("app", "/app", "Model", [spec(num_replicas=1)])
        await h.wait_status("DEPLOYING")
        h.cluster.live()[0].finish_start()
        await h.wait_status("RUNNING")
        await core.scale_deployment("app", "Model", 2)
        await h.tick()
        assert (await h.status()).deployments["Model"].status == "UPSCALING"
        await h.wait_status("RUNNING")

    run(scenario())
