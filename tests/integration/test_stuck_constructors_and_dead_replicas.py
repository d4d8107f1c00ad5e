"""On a real Ray: a constructor that never returns, and a replica that dies with requests in flight.

Before, a hanging ``__init__`` blocked ``serve.run`` forever (even after ``serve.delete``), the status said
only "Updating: 0 of 1", and HTTP requests to the app hung. A replica killed mid-request failed every
request it was serving, however safe they were to repeat.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

import pytest
import ray
import requests

import serve_nb as serve
from serve_nb.exceptions import DeployError, RayServeException, ReplicaUnavailableError
from helpers import URL, make_signal, ongoing_requests, wait_until

#: Small, so a test waits a second rather than the default 30 s for its 503.
#: Short, so a request with no replica is refused quickly; long enough for a killed replica's replacement to start
#: on a loaded 2-core machine (a retried GET waits for it this long: 1 s was not always enough under CI's load).
NO_REPLICA_TIMEOUT_S = 4.0


@pytest.fixture(scope="module")
def serve_with_bounds(ray_session):
    """serve_nb with a short no-replica bound and safe-method retries on (options fixed at start)."""
    serve.shutdown()
    serve.start(http_options={"no_replica_timeout_s": NO_REPLICA_TIMEOUT_S, "retry_safe_methods": True})
    yield
    serve.shutdown()  # the next module's serve.start() brings the defaults back


@pytest.fixture
def apps(serve_with_bounds):
    yield
    for name in list(serve.status().applications):
        serve.delete(name)


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Stuck:
    """A constructor that waits for a signal nobody sends (a lock, a download that never ends)."""

    def __init__(self, gate: Any) -> None:
        ray.get(gate.wait.remote())

    def __call__(self, request: Any = None) -> str:
        return "never"


def _replica_actor_names(app: str) -> list[str]:
    """The live replica actors of ``app`` (Ray forgets a named actor's name once it is dead)."""
    from serve_nb.common.names import NAMESPACE

    names = ray.util.list_named_actors(all_namespaces=True)
    return sorted(a["name"] for a in names
                  if a["namespace"] == NAMESPACE and a["name"].startswith(f"SERVE_NB_REPLICA::{app}#"))


def _in_background(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def _slow_init_warnings(caplog: pytest.LogCaptureFixture, app: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.getMessage().startswith(f"serve.run('{app}'): replica")]


def test_a_stuck_constructor_is_named_and_deleting_the_app_unblocks_serve_run_at_once(apps, caplog):
    gate = make_signal()
    with caplog.at_level(logging.WARNING, logger="serve_nb"):
        thread, outcome = _in_background(lambda: serve.run(Stuck.bind(gate), name="stuck", route_prefix="/stuck"))
        said = wait_until(lambda: _slow_init_warnings(caplog, "stuck"), timeout_s=30, what="serve.run to name the replica")
    assert len(said) == 1 and "has been in __init__ for 5 s; still waiting" in said[0]
    assert "serve.delete('stuck') to cancel it" in said[0]
    info = serve.status().applications["stuck"]
    assert info.status == "DEPLOYING"
    [replica_id] = info.deployments["Stuck"].initializing_for_s
    assert f"Replica {replica_id} has been in __init__ for" in info.deployments["Stuck"].message
    assert len(_replica_actor_names("stuck")) == 1

    started = time.monotonic()
    serve.delete("stuck")
    thread.join(10)
    assert not thread.is_alive(), "serve.run returned"
    assert time.monotonic() - started < 5, "at once, not after some timeout"
    assert isinstance(outcome["error"], RayServeException)
    assert "was deleted while serve.run was waiting" in str(outcome["error"])
    assert _replica_actor_names("stuck") == [], "the replica stuck in __init__ was killed"


def test_an_interrupt_stops_only_the_wait_and_the_deploy_goes_on(apps, caplog):
    gate = make_signal()
    main = threading.main_thread().ident
    assert threading.current_thread().ident == main

    def interrupt_once_waiting() -> None:
        wait_until(lambda: _slow_init_warnings(caplog, "wait"), timeout_s=30, what="serve.run waiting")
        signal.pthread_kill(main, signal.SIGINT)  # what the notebook's interrupt button does to the kernel

    with caplog.at_level(logging.WARNING, logger="serve_nb"):
        interrupter = threading.Thread(target=interrupt_once_waiting, daemon=True)
        interrupter.start()
        with pytest.raises(KeyboardInterrupt, match=r"serve.run\('wait'\) stopped waiting; the application is still deploying"):
            serve.run(Stuck.bind(gate), name="wait", route_prefix="/wait")
        interrupter.join(5)

    info = serve.status().applications["wait"]
    assert info.status == "DEPLOYING" and info.deployments["Stuck"].replica_states == {"STARTING": 1}
    gate.send.remote()  # the constructor returns after all: the deploy finishes by itself
    wait_until(lambda: serve.status().applications["wait"].status == "RUNNING", timeout_s=30, what="the deploy")
    assert serve.get_app_handle("wait").remote().result(timeout_s=10) == "never"


def test_initialization_timeout_fails_the_deploy_with_the_reason(apps):
    gate = make_signal()
    started = time.monotonic()
    with pytest.raises(DeployError, match=r"was still in __init__ after \d+ s, past initialization_timeout_s=2"):
        serve.run(Stuck.options(initialization_timeout_s=2).bind(gate), name="bounded", route_prefix="/bounded")
    assert time.monotonic() - started < 15
    assert serve.status().applications["bounded"].status == "DEPLOY_FAILED"
    wait_until(lambda: _replica_actor_names("bounded") == [], what="the replica to be killed")
    reply = requests.get(f"{URL}/bounded", timeout=10)
    assert reply.status_code == 503 and "initialization_timeout_s" in reply.text


def test_a_request_to_an_app_with_no_running_replica_gets_503_after_a_bounded_wait(apps):
    gate = make_signal()
    serve.run(Stuck.bind(gate), name="cold", route_prefix="/cold", _blocking=False)
    wait_until(lambda: "/cold" in requests.get(f"{URL}/-/routes", timeout=10).json(), what="the route at the proxy")
    started = time.monotonic()
    reply = requests.get(f"{URL}/cold", timeout=30)
    waited = time.monotonic() - started
    assert reply.status_code == 503
    assert reply.text.startswith(
        f"Service Unavailable: No replica of deployment 'Stuck' of application 'cold' is running yet "
        f"(waited {NO_REPLICA_TIMEOUT_S:g} s)."
    )
    assert NO_REPLICA_TIMEOUT_S <= waited < NO_REPLICA_TIMEOUT_S + 5
    gate.send.remote()
    wait_until(lambda: serve.status().applications["cold"].status == "RUNNING", timeout_s=30, what="the deploy")
    assert requests.get(f"{URL}/cold", timeout=10).text == "never"


@serve.deployment(max_ongoing_requests=30, ray_actor_options={"num_cpus": 0.1})
class Gated:
    """Answers once the gate opens, so requests pile up on the one replica for the kill."""

    def __init__(self, gate: Any) -> None:
        self.gate = gate

    async def __call__(self, request: Any = None) -> str:
        await self.gate.wait.remote()
        return serve.get_replica_context().replica_id


def test_a_replica_killed_mid_request_costs_no_idempotent_request(apps):
    gate = make_signal()
    handle = serve.run(Gated.bind(gate), name="gated", route_prefix="/gated")
    plain = [handle.remote() for _ in range(8)]
    safe = [handle.options(idempotent=True).remote() for _ in range(8)]
    gets, get_outcomes = [], []
    posts, post_outcomes = [], []
    for _ in range(4):
        thread, outcome = _in_background(lambda: requests.get(f"{URL}/gated", timeout=60))
        gets.append(thread), get_outcomes.append(outcome)
        thread, outcome = _in_background(lambda: requests.post(f"{URL}/gated", timeout=60))
        posts.append(thread), post_outcomes.append(outcome)
    wait_until(lambda: ongoing_requests("gated", "Gated") == [24], timeout_s=30, what="every request in flight")
    [victim] = _replica_actor_names("gated")
    ray.kill(ray.get_actor(victim, namespace="serve_nb"), no_restart=True)
    wait_until(lambda: len(_replica_actor_names("gated")) == 1 and victim not in _replica_actor_names("gated"),
               timeout_s=30, what="the replacement replica")
    gate.send.remote()

    victim_id = victim.rsplit("#", 1)[1]
    answers = [r.result(timeout_s=60) for r in safe]
    assert len(answers) == 8 and victim_id not in answers, "every idempotent call answered, by the replacement"
    for response in plain:  # it may have run: never sent again
        with pytest.raises(ReplicaUnavailableError):
            response.result(timeout_s=60)
    for thread in gets + posts:
        thread.join(60)
    assert [o["value"].status_code for o in get_outcomes] == [200] * 4, "GET is sent again (retry_safe_methods)"
    assert [o["value"].status_code for o in post_outcomes] == [500] * 4, "POST is not"


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class BlocksItsLoop:
    """User code that blocks the replica's event loop (``time.sleep`` in an ``async def``)."""

    async def __call__(self, seconds: float) -> str:
        time.sleep(seconds)
        return ray.get_runtime_context().get_actor_id()


def test_a_replica_whose_loop_user_code_blocks_past_the_heartbeat_keeps_its_request_and_is_not_replaced(apps):
    from serve_nb.data.channel.liveness import DEFAULT_HEARTBEAT_TIMEOUT_S

    handle = serve.run(BlocksItsLoop.bind(), name="blocks", route_prefix=None)
    replica = handle.remote(0).result(timeout_s=30)
    [actor_name] = _replica_actor_names("blocks")
    # The caller hears nothing on the channel while the loop is blocked, as from a frozen node; but Ray's call to
    # the replica's liveness thread is answered, so the request waits for its answer instead of failing.
    assert handle.remote(DEFAULT_HEARTBEAT_TIMEOUT_S * 2 + 2).result(timeout_s=60) == replica
    # The controller asks the same thread: the replica is not replaced.
    assert handle.remote(0).result(timeout_s=60) == replica
    assert _replica_actor_names("blocks") == [actor_name]
