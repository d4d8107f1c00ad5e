"""Deployments, handles and the controller against a real local Ray: calls, errors, redeploys, status."""

from __future__ import annotations

import asyncio
import threading

import pytest
import ray

import serve_nb as serve
from serve_nb.exceptions import DeployError, RayServeException, RequestCancelledError, ServeException
from serve_nb.handle import DeploymentHandle, DeploymentResponse
from helpers import define, deployment_detail, make_signal, ongoing_requests, wait_until


class Unhappy(ValueError):
    """A user exception type that must reach the caller as itself."""


@serve.deployment
class Counter:
    def __init__(self, start: int = 0):
        self.value = start

    def __call__(self, inc: int = 1) -> int:
        self.value += inc
        return self.value

    def replica_id(self) -> str:
        return serve.get_replica_context().replica_id

    async def fail(self, msg: str) -> None:
        raise Unhappy(msg)


def replica_ids(handle: DeploymentHandle, n_calls: int = 40) -> set[str]:
    return {handle.replica_id.remote().result() for _ in range(n_calls)}


def test_function_deployment_and_method_routing(serve_instance):
    @serve.deployment
    def double(x):
        return 2 * x

    h = serve.run(double.bind(), name="fn", route_prefix=None)
    assert h.remote(21).result() == 42

    c = serve.run(Counter.bind(10), name="counter", route_prefix=None)
    assert c.remote(5).result() == 15
    assert c.options(method_name="replica_id").remote().result() == c.replica_id.remote().result()


def test_user_exception_keeps_type_message_and_remote_traceback(serve_instance):
    h = serve.run(Counter.bind(), name="errors", route_prefix=None)
    with pytest.raises(Unhappy, match="no good") as info:
        h.fail.remote("no good").result()
    remote_tb = str(info.value.__cause__)
    assert "in fail" in remote_tb and "raise Unhappy(msg)" in remote_tb
    assert "serve_nb/" not in remote_tb  # only the user's frames, none of serve_nb's


def test_missing_method_lists_available_ones(serve_instance):
    h = serve.run(Counter.bind(), name="missing", route_prefix=None)
    with pytest.raises(AttributeError) as info:
        h.does_not_exist.remote().result()
    message = str(info.value)
    assert "does_not_exist" in message
    for name in ("__call__", "replica_id", "fail"):
        assert name in message


def test_response_await_result_repeatedly_and_a_timeout_cancels_the_request(serve_instance):
    @serve.deployment(max_ongoing_requests=1)
    class Gate:
        def __init__(self):
            self.event = asyncio.Event()
            self.cancelled = 0

        async def wait(self):
            try:
                await self.event.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            return "opened"

        async def open(self):
            self.event.set()

        def cancellations(self):
            return self.cancelled

    h = serve.run(Gate.bind(), name="gate", route_prefix=None)
    resp = h.wait.remote()
    with pytest.raises(TimeoutError, match="cancelled"):
        resp.result(timeout_s=0.5)
    with pytest.raises(RequestCancelledError):
        resp.result()
    # The only slot is free again (the replica stopped the request), so these run at once.
    assert h.cancellations.remote().result(timeout_s=10) == 1
    h.open.remote().result(timeout_s=10)
    resp = h.wait.remote()
    assert resp.result(timeout_s=10) == "opened"
    assert resp.result() == "opened"

    async def await_twice():
        return await resp, await resp

    assert asyncio.run(await_twice()) == ("opened", "opened")


def test_result_works_on_a_thread_whose_event_loop_is_running(serve_instance):
    """What a Jupyter cell is: ``.result()`` called while the thread's asyncio loop runs."""
    h = serve.run(Counter.bind(), name="nbloop", route_prefix=None)

    async def cell():
        sync_value = h.remote(1).result()  # Ray Serve raises RuntimeError here
        async_value = await h.remote(1)
        return sync_value, async_value

    assert asyncio.run(cell()) == (1, 2)


def test_many_threads_call_at_once(serve_instance):
    h = serve.run(Counter.options(max_ongoing_requests=50).bind(), name="threads", route_prefix=None)
    results: list[int] = []
    lock = threading.Lock()

    def worker():
        for _ in range(25):
            value = h.remote(1).result(timeout_s=30)
            with lock:
                results.append(value)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == list(range(1, 201))  # one replica: every increment seen once


def test_response_as_argument_is_resolved_without_waiting(serve_instance):
    @serve.deployment
    def add(a, b):
        return a + b

    h = serve.run(add.bind(), name="chain", route_prefix=None)
    first = h.remote(1, 2)
    second = h.remote(first, 10)  # returns at once; the router resolves `first`
    assert isinstance(second, DeploymentResponse)
    assert second.result() == 13


def test_nested_bound_deployments_become_handles(serve_instance):
    @serve.deployment
    class Leaf:
        def __init__(self, tag):
            self.tag = tag

        def __call__(self):
            return self.tag

    @serve.deployment
    class Root:
        def __init__(self, handles: dict, more: list):
            self.handles = handles
            self.more = more

        async def __call__(self):
            kinds = {type(h).__name__ for h in [*self.handles.values(), *self.more]}
            values = [await h.remote() for h in [*self.handles.values(), *self.more]]
            return kinds, values

    app = Root.bind({"a": Leaf.options(name="A").bind("a")}, [Leaf.options(name="B").bind("b")])
    kinds, values = serve.run(app, name="nested", route_prefix=None).remote().result()
    assert kinds == {"DeploymentHandle"}
    assert values == ["a", "b"]


def test_sync_methods_do_not_block_the_replica_loop(serve_instance):
    @serve.deployment
    class Mixed:
        def __init__(self):
            self.event = threading.Event()

        def block(self):
            return "released" if self.event.wait(20) else "timed out"

        async def ping(self):
            return "pong"

        async def release(self):
            self.event.set()

    h = serve.run(Mixed.bind(), name="mixed", route_prefix=None)
    blocked = h.block.remote()
    assert h.ping.remote().result(timeout_s=5) == "pong"
    h.release.remote().result(timeout_s=5)
    assert blocked.result(timeout_s=10) == "released"


def test_streaming_handle(serve_instance):
    @serve.deployment
    class Gen:
        def count(self, n):
            for i in range(n):
                yield i

        async def acount(self, n):
            for i in range(n):
                yield i * 10

    h = serve.run(Gen.bind(), name="gen", route_prefix=None)
    assert list(h.options(stream=True).count.remote(4)) == [0, 1, 2, 3]

    async def collect():
        return [x async for x in h.options(stream=True, method_name="acount").remote(3)]

    assert asyncio.run(collect()) == [0, 10, 20]
    with pytest.raises(TypeError, match="stream=True"):
        h.count.remote(2).result()


def test_unchanged_redeploy_restarts_nothing(serve_instance):
    h = serve.run(Counter.options(num_replicas=2).bind(), name="stable", route_prefix=None)
    before = replica_ids(h)
    assert len(before) == 2
    h.remote(100).result()
    serve.run(Counter.options(num_replicas=2).bind(), name="stable", route_prefix=None)
    assert replica_ids(h) == before


def test_redefined_identical_class_keeps_replicas_changed_code_replaces_them(serve_instance):
    source = '''
import serve_nb as serve
@serve.deployment
class Model:
    def __call__(self):
        return "{answer}"
    def replica_id(self):
        return serve.get_replica_context().replica_id
'''

    h = serve.run(define(source, "Model", answer="v1").bind(), name="cell", route_prefix=None)
    first = h.replica_id.remote().result()
    serve.run(define(source, "Model", answer="v1").bind(), name="cell", route_prefix=None)  # re-run: new class
    assert h.replica_id.remote().result() == first
    serve.run(define(source, "Model", answer="v2").bind(), name="cell", route_prefix=None)
    assert h.remote().result() == "v2"
    assert h.replica_id.remote().result() != first
    assert serve.status().applications["cell"].deployments["Model"].replica_states == {"RUNNING": 1}


def test_user_config_change_reconfigures_in_place(serve_instance):
    @serve.deployment(user_config={"greeting": "hi"})
    class Greeter:
        def reconfigure(self, config):
            self.greeting = config["greeting"]

        def __call__(self):
            return self.greeting, serve.get_replica_context().replica_id

    h = serve.run(Greeter.bind(), name="greeter", route_prefix=None)
    greeting, rid = h.remote().result()
    assert greeting == "hi"
    serve.run(Greeter.options(user_config={"greeting": "hello"}).bind(), name="greeter", route_prefix=None)
    assert h.remote().result() == ("hello", rid)


def test_num_replicas_change_only_adds_or_removes(serve_instance):
    h = serve.run(Counter.options(num_replicas=1).bind(), name="scale", route_prefix=None)
    (first,) = replica_ids(h)
    serve.run(Counter.options(num_replicas=3).bind(), name="scale", route_prefix=None)
    grown = wait_until(lambda: (ids := replica_ids(h, 60)) and len(ids) == 3 and ids, what="3 replicas")
    assert first in grown
    serve.run(Counter.options(num_replicas=2).bind(), name="scale", route_prefix=None)
    assert serve.status().applications["scale"].deployments["Counter"].replica_states == {"RUNNING": 2}
    remaining = wait_until(lambda: (ids := replica_ids(h, 60)) and len(ids) == 2 and ids, what="2 replicas")
    assert remaining < grown


def test_non_blocking_run_queues_requests_until_a_replica_is_up(serve_instance):
    loaded = make_signal()

    @serve.deployment
    class SlowStart:
        def __init__(self, loaded):
            ray.get(loaded.wait.remote(), timeout=60)  # a slow model load, finished when the test says so

        def __call__(self, x):
            return x + 1

    h = serve.run(SlowStart.bind(loaded), name="slowstart", route_prefix=None, _blocking=False)
    assert serve.status().applications["slowstart"].status == "DEPLOYING"
    response = h.remote(1)
    # The controller counts the request as waiting in this caller while no replica is up yet.
    wait_until(lambda: deployment_detail("slowstart", "SlowStart").ongoing == 1, what="the request to be queued")
    assert not response.done()
    assert serve.status().applications["slowstart"].status == "DEPLOYING"
    loaded.send.remote()
    assert response.result(timeout_s=30) == 2
    assert serve.status().applications["slowstart"].status == "RUNNING"


def test_constructor_failure_reports_traceback_and_recovers(serve_instance):
    @serve.deployment
    class Broken:
        def __init__(self, fail):
            if fail:
                raise RuntimeError("model file missing")

        def __call__(self):
            return "fixed"

    with pytest.raises(DeployError, match="model file missing"):
        serve.run(Broken.bind(True), name="broken", route_prefix=None)
    app = serve.status().applications["broken"]
    assert app.status == "DEPLOY_FAILED"
    dep = app.deployments["Broken"]
    assert dep.status == "DEPLOY_FAILED"
    assert "Traceback" in dep.message and "model file missing" in dep.message
    assert "raise RuntimeError" in dep.message

    h = serve.run(Broken.bind(False), name="broken", route_prefix=None)
    assert h.remote().result() == "fixed"
    assert serve.status().applications["broken"].status == "RUNNING"


def test_handle_to_failed_app_fails_fast(serve_instance):
    @serve.deployment
    class Never:
        def __init__(self):
            raise OSError("no GPU")

    with pytest.raises(DeployError, match="no GPU"):
        serve.run(Never.bind(), name="never", route_prefix=None)
    with pytest.raises(serve.exceptions.DeploymentUnavailableError, match="no GPU"):
        serve.get_app_handle("never").remote().result(timeout_s=10)


def test_bad_input_is_refused_before_anything_deploys(serve_instance):
    with pytest.raises(ValueError, match="must start with a forward slash"):
        serve.run(Counter.bind(), name="bad1", route_prefix="nope")
    with pytest.raises(ValueError, match="num_replicas"):
        Counter.options(num_replicas=0)
    with pytest.raises(ValueError, match="num_replicas"):
        Counter.options(num_replicas=-2)
    with pytest.raises(ValueError, match="reconfigure"):
        Counter.options(user_config={"a": 1})
    with pytest.raises(TypeError, match="bind"):
        serve.run(Counter, name="bad2")
    with pytest.raises(TypeError, match="Application"):
        serve.run("not an app", name="bad3")
    with pytest.raises(TypeError, match="not_an_option"):
        serve.deployment(not_an_option=1)
    with pytest.raises(ValueError, match="ray_actor_options"):
        Counter.options(ray_actor_options={"num_cpu": 1})
    assert not {"bad1", "bad2", "bad3"} & set(serve.status().applications)


def test_a_deployment_bound_twice_is_two_deployments_the_second_renamed(serve_instance, caplog):
    import logging

    @serve.deployment
    class Part:
        def __init__(self, x):
            self.x = x

        def __call__(self):
            return self.x

    class Pair:
        """An ordinary object holding bound applications: they become handles all the same."""

        def __init__(self, left, right):
            self.left, self.right = left, right

    @serve.deployment
    class Whole:
        def __init__(self, pair):
            self.pair = pair

        async def __call__(self):
            return [await self.pair.left.remote(), await self.pair.right.remote()]

    with caplog.at_level(logging.WARNING, logger="serve_nb"):
        handle = serve.run(Whole.bind(Pair(Part.bind(1), Part.bind(2))), name="dup", route_prefix=None)
    assert handle.remote().result() == [1, 2]
    assert set(serve.status().applications["dup"].deployments) == {"Part", "Part_1", "Whole"}
    assert any("renaming one to 'Part_1'" in r.getMessage() for r in caplog.records)


def test_route_prefix_conflict_is_refused_and_other_app_keeps_serving(serve_instance):
    first = serve.run(Counter.bind(), name="owner", route_prefix="/shared")
    with pytest.raises(serve.exceptions.RayServeException, match="already used by application 'owner'") as info:
        serve.run(Counter.bind(), name="intruder", route_prefix="/shared")
    assert isinstance(info.value, ValueError), "code that caught ValueError still does"
    assert "intruder" not in serve.status().applications
    assert first.remote(1).result() == 1


def test_get_handles_and_replica_context(serve_instance):
    @serve.deployment
    class Inner:
        def __call__(self):
            ctx = serve.get_replica_context()
            return ctx.app_name, ctx.deployment, type(ctx.servable_object).__name__

    @serve.deployment
    class Outer:
        def __init__(self, inner):
            pass

        async def __call__(self):
            return await serve.get_deployment_handle("Inner").remote()

    serve.run(Outer.bind(Inner.bind()), name="ctx", route_prefix=None)
    assert serve.get_app_handle("ctx").remote().result() == ("ctx", "Inner", "Inner")
    assert serve.get_deployment_handle("Inner", "ctx").remote().result()[0] == "ctx"
    with pytest.raises(RayServeException, match="does not exist"):
        serve.get_app_handle("no-such-app")
    with pytest.raises(RayServeException, match="no deployment 'Nope'"):
        serve.get_deployment_handle("Nope", "ctx")
    with pytest.raises(RayServeException, match="within a serve_nb replica"):
        serve.get_replica_context()


def test_delete_removes_app_and_its_replicas(serve_instance):
    h = serve.run(Counter.options(num_replicas=2).bind(), name="doomed", route_prefix="/doomed")
    h.remote().result()
    serve.delete("doomed")
    assert "doomed" not in serve.status().applications
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    assert not [n for n in names if "doomed#" in n]
    # "Application 'doomed' is being deleted." or, once it is gone, "... of application 'doomed' no longer exists."
    with pytest.raises(serve.exceptions.DeploymentUnavailableError, match="[Aa]pplication 'doomed'"):
        h.remote().result(timeout_s=10)


def test_controller_is_detached_named_and_checkpoints(serve_instance):
    from ray.experimental import internal_kv

    from serve_nb.common.names import CONTROLLER_NAME, NAMESPACE
    from serve_nb.control.checkpoint import CHECKPOINT_KEY
    from serve_nb.common.serialization import loads

    serve.run(Counter.bind(), name="ckpt", route_prefix="/ckpt")
    ray.get_actor(CONTROLLER_NAME, namespace=NAMESPACE)  # raises ValueError if there is no such named actor
    saved = loads(internal_kv._internal_kv_get(CHECKPOINT_KEY, namespace=NAMESPACE))
    assert saved["apps"]["ckpt"]["route_prefix"] == "/ckpt"
    assert "Counter" in saved["apps"]["ckpt"]["deployments"]


def test_public_feed_pushes_status_changes(serve_instance):
    seen: list[str] = []
    event = threading.Event()

    def on_status(status):
        app = status.applications.get("fed") if status else None
        if app is not None:
            seen.append(str(app.status))
            if app.status == "RUNNING":
                event.set()

    sub = serve.feed.subscribe(serve.feed.STATUS, on_status)
    try:
        serve.run(Counter.bind(), name="fed", route_prefix=None, _blocking=False)
        assert event.wait(30)
        assert seen[-1] == "RUNNING"
    finally:
        sub.cancel()


def test_status_without_controller_is_empty_and_starts_nothing(ray_session):
    from serve_nb.common.names import CONTROLLER_NAME, NAMESPACE

    serve.shutdown()
    assert serve.status().applications == {}
    with pytest.raises(ValueError, match="Failed to look up actor"):
        ray.get_actor(CONTROLLER_NAME, namespace=NAMESPACE)
    assert issubclass(serve.exceptions.BackPressureError, ServeException)


def test_handle_backpressure_raises_at_once(serve_instance):
    signal = make_signal()

    @serve.deployment(max_ongoing_requests=1, max_queued_requests=2)
    class Narrow:
        def __init__(self, signal):
            self.signal = signal

        async def __call__(self):
            await self.signal.wait.remote()
            return "ok"

    h = serve.run(Narrow.bind(signal), name="narrow-handle", route_prefix=None)
    first = h.remote()
    wait_until(lambda: ongoing_requests("narrow-handle", "Narrow") == [1], what="first request running")
    queued = [h.remote(), h.remote()]
    # What the controller (and the dashboard) count for the deployment: one running, two waiting in this caller.
    wait_until(lambda: deployment_detail("narrow-handle", "Narrow").ongoing == 3, what="two queued requests")
    with pytest.raises(serve.exceptions.BackPressureError, match="max_queued_requests=2"):
        h.remote().result(timeout_s=5)
    signal.send.remote()
    assert [r.result(timeout_s=30) for r in (first, *queued)] == ["ok", "ok", "ok"]


def test_code_update_completes_when_there_is_no_room_to_surge(serve_instance):
    """Two replicas hold both slots of a resource: the update must replace them, not wait forever."""
    source = """
import serve_nb as serve
@serve.deployment(num_replicas=2, ray_actor_options={{"num_cpus": 0, "resources": {{"two_slots": 1}}}})
class Tight:
    def __call__(self):
        return "{answer}"
"""

    h = serve.run(define(source, "Tight", answer="v1").bind(), name="tight", route_prefix=None)
    assert h.remote().result() == "v1"
    serve.run(define(source, "Tight", answer="v2").bind(), name="tight", route_prefix=None)  # returns once RUNNING
    assert {h.remote().result() for _ in range(20)} == {"v2"}
    assert serve.status().applications["tight"].deployments["Tight"].replica_states == {"RUNNING": 2}


def test_an_async_constructor_is_awaited_on_the_replicas_loop(serve_instance):
    import asyncio

    @serve.deployment
    class Loaded:
        async def __init__(self, name):
            await asyncio.sleep(0.01)  # e.g. async model loading
            self.name = name
            self.loop = id(asyncio.get_running_loop())

        async def __call__(self):
            return self.name, self.loop == id(asyncio.get_running_loop())

    handle = serve.run(Loaded.bind("model-a"), name="async-init", route_prefix=None)
    assert handle.remote().result() == ("model-a", True)


def test_options_ray_refuses_fail_serve_run_as_a_runtime_error_with_rays_reason(serve_instance):
    @serve.deployment(ray_actor_options={"runtime_env": {"working_dir": "."}})
    class Anywhere:
        def __call__(self):
            return "never"

    with pytest.raises(RuntimeError, match="Ray could not create a replica actor") as info:
        serve.run(Anywhere.bind(), name="bad-env", route_prefix=None)
    assert isinstance(info.value, serve.exceptions.DeployError)
    assert "RayTaskError" not in str(info.value)
    serve.delete("bad-env")
