"""What the controller does when replicas fail: to start, health checks, or by dying (fake actors, no Ray)."""

from __future__ import annotations

from fake_cluster import Harness, quiesce, run, spec, until

from serve_nb.control.deployment_state import HEALTH_FAILURES_BEFORE_REPLACE, MAX_CONSTRUCTOR_ATTEMPTS

PERIOD_S = 10.0  # health_check_period_s of the deployments below


def test_a_constructor_that_keeps_failing_fails_the_deploy_until_it_is_redeployed():
    async def scenario():
        h = Harness()
        h.cluster.constructor_errors["Model"] = "ValueError: bad weights path"
        core = await h.start()
        await core.deploy_app("app", "/app", "Model", [spec()])
        await h.wait_status("DEPLOY_FAILED")
        assert len(h.cluster.replicas) == MAX_CONSTRUCTOR_ATTEMPTS
        assert not h.cluster.live(), "every failed replica is killed"
        info = await h.status()
        assert "failed 3 times" in info.message and "bad weights path" in info.message
        unavailable = h.published("replicas:app#Model").unavailable
        assert unavailable is not None and "failed to deploy" in unavailable
        await h.tick(60.0)
        assert len(h.cluster.replicas) == MAX_CONSTRUCTOR_ATTEMPTS, "no retry until it is redeployed"

        del h.cluster.constructor_errors["Model"]  # "fix and re-run" (here: just re-run)
        await core.deploy_app("app", "/app", "Model", [spec()])
        await h.wait_status("RUNNING")
        assert len(h.cluster.live()) == 1

    run(scenario())


def test_a_replica_failing_health_checks_is_replaced_unhealthy_then_healthy():
    async def scenario():
        h = Harness()
        core, [sick] = await h.running(health_check_period_s=PERIOD_S)
        sick.healthy = False
        for _ in range(HEALTH_FAILURES_BEFORE_REPLACE - 1):
            await h.tick(PERIOD_S)
        assert not sick.killed, "a few failed checks in a row are tolerated"
        assert await h.app_status() == "RUNNING"

        h.cluster.hold_starts = True  # see the app while the replacement starts
        await h.tick(PERIOD_S)
        assert sick.killed
        await h.wait_status("UNHEALTHY")
        message = (await h.status()).deployments["Model"].message
        assert f"failed {HEALTH_FAILURES_BEFORE_REPLACE} health checks in a row: ValueError: sick" in message
        [replacement] = h.cluster.live()
        replacement.finish_start()
        await h.wait_status("RUNNING")
        assert (await h.status()).deployments["Model"].status == "HEALTHY"

    run(scenario())


def test_a_passing_check_resets_the_count_of_failures():
    async def scenario():
        h = Harness()
        core, [replica] = await h.running(health_check_period_s=PERIOD_S)
        for healthy in [False, False, True, False, False, True]:
            replica.healthy = healthy
            await h.tick(PERIOD_S)
        assert not replica.killed

    run(scenario())


def test_a_replica_that_dies_is_noticed_and_replaced():
    async def scenario():
        h = Harness()
        core, (victim, survivor) = await h.running(num_replicas=2)
        h.cluster.hold_starts = True
        victim.die()
        await until(lambda: victim.replica_id not in {i.replica_id for i in h.published("replicas:app#Model").replicas},
                    "the dead replica to leave the published replica set")
        await h.wait_status("UNHEALTHY")
        assert f"replica {victim.replica_id} died" in (await h.status()).message
        [replacement] = [r for r in h.cluster.live() if r is not survivor]
        replacement.finish_start()
        await h.wait_status("RUNNING")
        assert not survivor.killed

    run(scenario())


def test_an_unreachable_report_checks_the_replica_at_once():
    async def scenario():
        h = Harness()
        core, [replica] = await h.running(num_replicas=1)
        await core.report_unreachable("app", "Model", replica.replica_id)
        await quiesce()
        assert not replica.killed, "a replica that answers stays"
        replica.frozen = True
        await core.report_unreachable("app", "Model", replica.replica_id)
        assert replica.killed
        assert "is unreachable: GetTimeoutError: timed out" in (await h.status()).message

    run(scenario())


def test_an_unreachable_report_spares_a_replica_whose_process_answers_though_its_loop_is_busy():
    async def scenario():
        h = Harness()
        core, [replica] = await h.running(num_replicas=1)
        replica.healthy = False  # its health check fails (a loop blocked by user code), its process answers
        await core.report_unreachable("app", "Model", replica.replica_id)
        await quiesce()
        assert not replica.killed, "the unreachable report asks the process, not the event loop"

    run(scenario())


def test_a_lost_replica_is_reported_as_replaced_until_its_replacement_runs():
    async def scenario():
        h = Harness()
        core, (lost, survivor) = await h.running(num_replicas=2, health_check_period_s=PERIOD_S)
        h.cluster.hold_starts = True
        lost.die()
        await h.wait_status("UNHEALTHY")
        await h.tick(PERIOD_S)  # the survivor passes its checks meanwhile: that alone is no recovery
        info = (await h.status()).deployments["Model"]
        assert info.status == "UNHEALTHY"
        assert info.message.endswith("Replacing lost replicas: 1 of 2 running.") and "new version" not in info.message
        [replacement] = [r for r in h.cluster.live() if r is not survivor]
        replacement.finish_start()
        await h.wait_status("RUNNING")
        assert (await h.status()).deployments["Model"].message == ""

    run(scenario())
