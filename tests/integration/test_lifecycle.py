"""Health checks, rolling updates, draining, failed updates and controller recovery, on a real Ray."""

from __future__ import annotations

import os
import tempfile
import threading
import time

import pytest
import ray
import requests

import serve_nb as serve
from helpers import URL, define, ongoing_requests, wait_until

HEALTH_CHECK_PERIOD_S = 0.2
FAILURES_IN_A_ROW_TO_REPLACE = 3  # what serve_nb (like Ray Serve) tolerates before it replaces a replica


def replica_ids(app: str) -> set[str]:
    detail = serve.feed.get(serve.feed.app(app))
    return {r.replica_id for d in detail.deployments for r in d.replicas if r.state == "RUNNING"}


def deployment_status(app: str, dep: str) -> str:
    return str(serve.status().applications[app].deployments[dep].status)


@serve.deployment(health_check_period_s=HEALTH_CHECK_PERIOD_S, health_check_timeout_s=1)
class Flaky:
    def __init__(self):
        self.failures_left = 0
        self.checks = 0

    def fail_next(self, n: int) -> None:
        self.failures_left = n

    def failures_pending(self) -> int:
        return self.failures_left

    def health_checks(self) -> tuple[str, int]:
        return serve.get_replica_context().replica_id, self.checks

    def check_health(self):
        self.checks += 1
        if self.failures_left > 0:
            self.failures_left -= 1
            raise RuntimeError("sick")

    def __call__(self):
        return serve.get_replica_context().replica_id


def test_three_failed_health_checks_replace_the_replica_and_status_recovers(serve_instance):
    h = serve.run(Flaky.bind(), name="flaky", route_prefix=None)
    (first,) = replica_ids("flaky")
    seen: list[str] = []
    sub = serve.feed.subscribe(serve.feed.STATUS, lambda s: s and "flaky" in s.applications and seen.append(
        str(s.applications["flaky"].deployments["Flaky"].status)))
    try:
        h.fail_next.remote(3).result()
        wait_until(lambda: replica_ids("flaky") and first not in replica_ids("flaky"), what="a replacement replica")
        wait_until(lambda: deployment_status("flaky", "Flaky") == "HEALTHY", what="HEALTHY again")
    finally:
        sub.cancel()
    assert "UNHEALTHY" in seen and seen[-1] == "HEALTHY"
    assert seen.index("UNHEALTHY") < len(seen) - 1


def test_an_intermittent_health_failure_does_not_replace(serve_instance):
    h = serve.run(Flaky.bind(), name="intermittent", route_prefix=None)
    (first,) = replica_ids("intermittent")

    def checks_on_first() -> int:
        rid, count = h.health_checks.remote().result()
        assert rid == first, f"replica {first} was replaced by {rid}"
        return count

    seen: list[str] = []
    sub = serve.feed.subscribe(serve.feed.STATUS, lambda s: s and "intermittent" in s.applications and seen.append(
        str(s.applications["intermittent"].deployments["Flaky"].status)))
    try:
        for _ in range(FAILURES_IN_A_ROW_TO_REPLACE):
            h.fail_next.remote(1).result()
            wait_until(lambda: h.failures_pending.remote().result() == 0, what="one failed health check")
            # Proving a non-event needs a window. It is counted in health checks, not guessed in seconds: as
            # many more checks (one every HEALTH_CHECK_PERIOD_S) as a replacement needs failures in a row,
            # all on the first replica (were it replaced, the calls would reach another and this would fail).
            after = checks_on_first()
            wait_until(lambda: checks_on_first() >= after + FAILURES_IN_A_ROW_TO_REPLACE,
                       timeout_s=FAILURES_IN_A_ROW_TO_REPLACE * HEALTH_CHECK_PERIOD_S + 10,
                       what=f"{FAILURES_IN_A_ROW_TO_REPLACE} more health checks on the same replica")
    finally:
        sub.cancel()
    assert replica_ids("intermittent") == {first}
    assert deployment_status("intermittent", "Flaky") == "HEALTHY"
    assert seen and set(seen) == {"HEALTHY"}  # what a user watching the status saw: never UNHEALTHY


def test_a_crashed_replica_is_replaced_at_once(serve_instance):
    @serve.deployment(health_check_period_s=60)
    class Crashy:
        def __call__(self):
            return "up"

    h = serve.run(Crashy.bind(), name="crashy", route_prefix=None)
    (first,) = replica_ids("crashy")
    ray.kill(ray.get_actor(f"SERVE_NB_REPLICA::crashy#Crashy#{first}", namespace="serve_nb"), no_restart=True)
    start = time.monotonic()
    wait_until(lambda: replica_ids("crashy") and first not in replica_ids("crashy"), timeout_s=20)
    assert time.monotonic() - start < 15  # far sooner than three 60 s health periods
    assert h.remote().result(timeout_s=10) == "up"


def test_failing_health_checks_during_deploy_fail_the_deploy_and_the_deployment_reads_unhealthy(serve_instance):
    @serve.deployment(health_check_period_s=HEALTH_CHECK_PERIOD_S, health_check_timeout_s=1)
    class NeverHealthy:
        def check_health(self):
            raise RuntimeError("database unreachable")

    with pytest.raises(RuntimeError, match="database unreachable"):  # DeployError, as Ray Serve's RuntimeError
        serve.run(NeverHealthy.bind(), name="never-healthy", route_prefix=None)
    assert serve.status().applications["never-healthy"].status == "DEPLOY_FAILED"
    assert deployment_status("never-healthy", "NeverHealthy") == "UNHEALTHY"  # as Ray Serve reports it


def test_failed_new_version_keeps_old_replicas_serving(serve_instance):
    source = """
import serve_nb as serve
@serve.deployment(num_replicas=2)
class Model:
    def __init__(self):
        if {broken}:
            raise ImportError("new weights missing")
    def __call__(self, request=None):
        return "old"
"""

    serve.run(define(source, "Model", broken=False).bind(), name="upgrade", route_prefix="/upgrade")
    before = replica_ids("upgrade")
    with pytest.raises(serve.exceptions.DeployError, match="new weights missing"):
        serve.run(define(source, "Model", broken=True).bind(), name="upgrade", route_prefix="/upgrade")
    app = serve.status().applications["upgrade"]
    assert app.status == "DEPLOY_FAILED" and "new weights missing" in app.message
    assert replica_ids("upgrade") == before
    assert all(requests.get(f"{URL}/upgrade").text == "old" for _ in range(10))


def test_del_runs_once_and_graceful_timeout_bounds_the_drain(serve_instance):
    marker = tempfile.NamedTemporaryFile(delete=False)
    marker.close()

    @serve.deployment(graceful_shutdown_timeout_s=1)
    class Finalized:
        def __init__(self, path):
            self.path = path

        async def __call__(self, request=None):
            import asyncio

            await asyncio.sleep(30)

        def __del__(self):
            with open(self.path, "a") as f:
                f.write("del\n")

    h = serve.run(Finalized.bind(marker.name), name="finalized", route_prefix=None)
    stuck = h.remote()
    wait_until(lambda: ongoing_requests("finalized", "Finalized") == [1], what="the request to reach the replica")
    start = time.monotonic()
    serve.delete("finalized")
    assert time.monotonic() - start < 6  # bounded by graceful_shutdown_timeout_s, not the 30 s request
    # The drain gave up on the request and stopped the replica under it.
    with pytest.raises(serve.exceptions.ReplicaUnavailableError, match="while it was handling the request"):
        stuck.result(timeout_s=10)
    with open(marker.name) as f:
        assert f.read() == "del\n"
    os.unlink(marker.name)


def test_no_failed_requests_during_update_scale_down_and_other_delete(serve_instance):
    source = """
import serve_nb as serve
@serve.deployment(num_replicas={n}, ray_actor_options={{"num_cpus": 0.1}})
class Steady:
    async def __call__(self, request=None):
        return "{answer}"
"""

    serve.run(define(source, "Steady", answer="v1", n=3).bind(), name="steady", route_prefix="/steady")

    @serve.deployment
    def other():
        return "other"

    serve.run(other.bind(), name="other-app", route_prefix="/other")
    stop = threading.Event()
    results: list[tuple[int, str] | Exception] = []

    def load():
        with requests.Session() as s:
            while not stop.is_set():
                try:
                    r = s.get(f"{URL}/steady", timeout=30)
                    results.append((r.status_code, r.text))
                except Exception as exc:  # noqa: BLE001 - a refused connection is a failed request too
                    results.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(results) > 50, what="load running")
        serve.run(define(source, "Steady", answer="v2", n=3).bind(), name="steady", route_prefix="/steady")  # code
        serve.run(define(source, "Steady", answer="v2", n=1).bind(), name="steady", route_prefix="/steady")  # scale
        serve.delete("other-app")
        count = len(results)
        wait_until(lambda: len(results) > count + 50, what="load after the changes")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    failures = [r for r in results if not isinstance(r, tuple) or r[0] != 200]
    assert failures == []
    answers = [text for _, text in results]
    assert answers[0] == "v1" and answers[-1] == "v2"


def test_controller_restart_readopts_replicas_and_no_request_fails(serve_instance):
    from serve_nb.common.names import CONTROLLER_NAME, NAMESPACE

    @serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0.1})
    class Survivor:
        def __call__(self, request=None):
            return "alive"

    h = serve.run(Survivor.bind(), name="survivor", route_prefix="/survivor")
    before = replica_ids("survivor")
    stop = threading.Event()
    results: list[tuple[str, object]] = []  # ("http", status code) or ("handle", result), or an exception

    def load():
        with requests.Session() as s:
            while not stop.is_set():
                try:
                    results.append(("http", s.get(f"{URL}/survivor", timeout=30).status_code))
                    results.append(("handle", h.remote().result(timeout_s=30)))
                except Exception as exc:  # noqa: BLE001 - a failure is what this test looks for
                    results.append(("failed", exc))

    t = threading.Thread(target=load)
    t.start()
    try:
        wait_until(lambda: len(results) > 20, what="load running")
        ray.kill(ray.get_actor(CONTROLLER_NAME, namespace=NAMESPACE), no_restart=False)
        wait_until(lambda: serve.status().applications.get("survivor") is not None
                   and serve.status().applications["survivor"].status == "RUNNING", timeout_s=60,
                   what="the restarted controller")
        count = len(results)
        wait_until(lambda: len(results) > count + 20, what="load after the restart")
    finally:
        stop.set()
        t.join(30)
    assert [r for r in results if r not in (("http", 200), ("handle", "alive"))] == []
    assert replica_ids("survivor") == before  # adopted, not restarted
    serve.run(Survivor.options(num_replicas=3).bind(), name="survivor", route_prefix="/survivor")
    assert serve.status().applications["survivor"].deployments["Survivor"].replica_states == {"RUNNING": 3}
    assert before < replica_ids("survivor")  # scaled in place after the restart
    serve.delete("survivor")
    assert "survivor" not in serve.status().applications


def test_a_replica_that_cannot_fit_says_so_in_the_status(serve_instance):
    @serve.deployment(ray_actor_options={"num_cpus": 512})
    class Huge:
        def __call__(self):
            return "never"

    serve.run(Huge.bind(), name="huge", route_prefix=None, _blocking=False)

    def waiting():
        dep = serve.status().applications["huge"].deployments["Huge"]
        return dep if dep.waiting_for_resources else None

    dep = wait_until(waiting, what="the waiting-for-resources flag")
    assert dep.status == serve.DeploymentStatus.UPDATING
    assert dep.message.startswith("Updating: 0 of 1 replicas running the new version. Waiting for resources:")
    assert "'CPU': 512.0" in dep.message and "more than any node in the cluster has" in dep.message
    serve.delete("huge")
    assert "huge" not in serve.status().applications
