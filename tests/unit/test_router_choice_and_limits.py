"""The router with fake replica connections: choice under per-replica limits, queueing and waking,
back-pressure, unavailability, retries after REJECT or NotSent, unreachable replicas, replica set updates."""

from __future__ import annotations

import asyncio
import random
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest

from serve_nb.data.channel import ConnectionLost, ForObjectStore, NotSent, Rejected
from serve_nb.data.request import Request, RequestKind, StashedResult
from serve_nb.data.router import MAX_IDEMPOTENT_RETRIES, Router
from serve_nb.exceptions import BackPressureError, DeploymentUnavailableError
from serve_nb.types import DeploymentID, ReplicaInfo, ReplicaSet

from loop_turns import until

DEP = DeploymentID("app", "Model")
CALL = Request(RequestKind.CALL, "__call__", (), {})
STREAM = Request(RequestKind.STREAM, "gen", (), {})


class FakeConnection:
    """One connection to a fake replica; what each request does is ``fleet.mode[replica]``."""

    def __init__(self, fleet: "Fleet", info: ReplicaInfo) -> None:
        self.fleet = fleet
        self.replica = info.replica_id
        self.info = info
        self.lost = False
        self.goodbye = False
        self.closed = False
        self.on_unusable: Callable[[Any], None] | None = None

    @property
    def usable(self) -> bool:
        return not (self.lost or self.goodbye)

    async def _outcome(self, request: Request) -> None:
        self.fleet.sent.append((self.replica, request))
        mode = self.fleet.mode.get(self.replica, "ok")
        if mode == "reject":
            raise Rejected()
        if mode == "reject-once":
            self.fleet.mode[self.replica] = "ok"
            raise Rejected()
        if mode in ("unreachable", "goodbye"):
            if mode == "unreachable":
                self.lost = True
            else:
                self.goodbye = True
            if self.on_unusable is not None:
                cb, self.on_unusable = self.on_unusable, None
                cb(self)
            raise NotSent(mode)
        if mode in ("dies", "dies-once"):  # the replica process died with the request in flight
            self.fleet.ran.append(self.replica)
            if mode == "dies-once":
                self.fleet.mode[self.replica] = "ok"
            self.lost = True
            if self.on_unusable is not None:
                cb, self.on_unusable = self.on_unusable, None
                cb(self)
            raise ConnectionLost("lost the connection mid-request")
        if mode == "hold":
            fut = asyncio.get_running_loop().create_future()
            self.fleet.held.append((self.replica, fut))
            await fut

    async def call(self, request: Request) -> Any:
        await self._outcome(request)
        mode = self.fleet.mode.get(self.replica)
        if mode == "large":
            raise ForObjectStore()
        if mode == "stashed":
            return StashedResult("t-1")
        return self.replica

    async def stream(self, request: Request, body: Any = None) -> AsyncIterator[Any]:
        await self._outcome(request)
        for i in range(3):
            yield (self.replica, i)
            if self.fleet.mode.get(self.replica) == "dies-mid-stream":
                raise NotSent("gone after the first item")
            if self.fleet.mode.get(self.replica) == "lost-mid-stream":
                raise ConnectionLost("lost after the first item")

    def close(self) -> None:
        self.closed = True


class Fleet:
    """The router's ``connect``: makes FakeConnections and remembers them."""

    def __init__(self) -> None:
        self.mode: dict[str, str] = {}
        self.connections: list[FakeConnection] = []
        self.sent: list[tuple[str, Request]] = []
        self.held: list[tuple[str, asyncio.Future[None]]] = []
        self.ran: list[str] = []  # replicas that started a request and then died

    def __call__(self, info: ReplicaInfo) -> FakeConnection:
        conn = FakeConnection(self, info)
        self.connections.append(conn)
        return conn

    def held_by(self, replica: str) -> int:
        return sum(1 for r, f in self.held if r == replica and not f.done())

    def release_one(self, replica: str) -> None:
        for r, fut in self.held:
            if r == replica and not fut.done():
                fut.set_result(None)
                return
        raise AssertionError(f"nothing held on {replica}")

    def release_all(self) -> None:
        for _, fut in self.held:
            if not fut.done():
                fut.set_result(None)


def info(name: str, port: int = 1) -> ReplicaInfo:
    return ReplicaInfo(name, "10.0.0.1", port, None, "node", 1)


def replica_set(*names: str, max_ongoing: int = 2, max_queued: int = -1) -> ReplicaSet:
    return ReplicaSet(tuple(info(n) for n in names), max_ongoing_requests=max_ongoing, max_queued_requests=max_queued)


def run(test: Callable[[Router, Fleet, dict[str, list[Any]]], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        fleet = Fleet()
        events: dict[str, list[Any]] = {"unreachable": [], "queued": []}
        router = Router(DEP, fleet, local_node_id="node", rng=random.Random(0),
                        on_replica_unreachable=events["unreachable"].append,
                        on_queue_change=events["queued"].append)
        try:
            return await asyncio.wait_for(test(router, fleet, events), 30)
        finally:
            fleet.release_all()
            router.close()

    return asyncio.run(main())


def test_no_replica_gets_more_than_max_ongoing_and_a_queued_request_waits_for_a_free_slot():
    async def test(router: Router, fleet: Fleet, events: dict[str, list[Any]]) -> None:
        router.update(replica_set("r1", "r2", "r3", max_ongoing=2))
        for name in ("r1", "r2", "r3"):
            fleet.mode[name] = "hold"
        calls = [asyncio.ensure_future(router.call(CALL)) for _ in range(6)]
        await until(lambda: len(fleet.held) == 6, "six requests running")
        assert [fleet.held_by(r) for r in ("r1", "r2", "r3")] == [2, 2, 2]
        seventh = asyncio.ensure_future(router.call(CALL))
        await until(lambda: router.num_queued == 1, "the seventh request queued")
        assert len(fleet.sent) == 6 and events["queued"] == [1]
        fleet.mode["r2"] = "ok"
        fleet.release_one("r2")
        assert await seventh == "r2"  # it woke up and took the freed slot
        assert router.num_queued == 0 and events["queued"] == [1, 0]
        fleet.release_all()
        assert sorted(await asyncio.gather(*calls)) == ["r1", "r1", "r2", "r2", "r3", "r3"]

    run(test)


def test_requests_before_the_first_replica_set_wait_for_it():
    async def test(router: Router, fleet: Fleet, events: dict[str, list[Any]]) -> None:
        call = asyncio.ensure_future(router.call(CALL))
        await until(lambda: router.num_queued == 1, "queued for the replica set")
        router.update(replica_set("r1"))
        assert await call == "r1"

    run(test)


def test_a_full_queue_raises_back_pressure():
    async def test(router: Router, fleet: Fleet, events: dict[str, list[Any]]) -> None:
        router.update(replica_set("r1", max_ongoing=1, max_queued=1))
        fleet.mode["r1"] = "hold"
        running = asyncio.ensure_future(router.call(CALL))
        queued = asyncio.ensure_future(router.call(CALL))
        await until(lambda: router.num_queued == 1, "one queued")
        with pytest.raises(BackPressureError, match="max_queued_requests=1"):
            await router.call(CALL)
        fleet.mode["r1"] = "ok"
        fleet.release_all()
        assert [await running, await queued] == ["r1", "r1"]

    run(test)


def test_an_unavailable_deployment_fails_new_and_queued_requests():
    async def test(router: Router, fleet: Fleet, events: dict[str, list[Any]]) -> None:
        queued = asyncio.ensure_future(router.call(CALL))
        await until(lambda: router.num_queued == 1, "queued")
        router.update(ReplicaSet(unavailable="the constructor raised"))
        with pytest.raises(DeploymentUnavailableError, match="the constructor raised"):
            await queued
        router.update(None)
        with pytest.raises(DeploymentUnavailableError, match="no longer exists"):
            await router.call(CALL)
        router.update(replica_set("r1"))  # back: replicas win over an old reason
        assert await router.call(CALL) == "r1"

    run(test)


def test_a_rejected_request_is_retried_on_another_replica():
    async def test(router: Router, fleet: Fleet, events: dict[str, list[Any]]) -> None:
        router.update(replica_set("r1", "r2"))
        fleet.mode["r1"] = "reject"
        results = [await router.call(CALL) for _ in range(10)]
        assert results == ["r2"] * 10
        assert any(r == "r1" for r, _ in fleet.sent)  # r1 was tried and rejected
        assert events["unreachable"] == []  # a REJECT is not a failure

    run(test)


def test_a_request_not_sent_is_retried_and_a_departing_replica_is_avoided():
    async def test(router: Router, fleet: Fleet, events: dict[str, list[Any]]) -> None:
        router.update(replica_set("r1", "r2"))
        fleet.mode["r1"] = "goodbye"
        results = [await router.call(CALL) for _ in range(10)]
        assert results == ["r2"] * 10
        assert [r for r, _ in fleet.sent].count("r1") == 1
        assert events["unreachable"] == []  # goodbye is orderly: nothing to report

    run(test)


def test_an_unreachable_replica_is_reported_once_and_blocked():
    async def test(router: Router, fleet: Fleet, events: dict[str, list[Any]]) -> None:
        router.update(replica_set("r1", "r2"))
        fleet.mode["r1"] = "unreachable"
        results = await asyncio.gather(*(router.call(CALL) for _ in range(20)))
        assert results == ["r2"] * 20
        assert events["unreachable"] == ["r1"]
        assert [c.replica for c in fleet.connections].count("r1") == 1  # never reconnected

    run(test)


def test_a_removed_replica_keeps_its_connection_until_its_requests_finish():
    async def test(router: Router, fleet: Fleet, events: dict[str, list[Any]]) -> None:
        router.update(replica_set("busy", max_ongoing=1))
        fleet.mode["busy"] = "hold"
        running = asyncio.ensure_future(router.call(CALL))
        await until(lambda: fleet.held_by("busy") == 1, "a request on the busy replica")
        router.update(replica_set("busy", "idle", max_ongoing=1))
        assert await router.call(CALL) == "idle"
        conns = {c.replica: c for c in fleet.connections}
        router.update(replica_set("new"))
        assert conns["idle"].closed and not conns["busy"].closed
        fleet.release_all()
        assert await running == "busy"  # finished on the old connection
        assert await router.call(CALL) == "new"

    run(test)


def test_a_replica_that_moved_gets_a_new_connection():
    async def test(router: Router, fleet: Fleet, events: dict[str, list[Any]]) -> None:
        router.update(ReplicaSet((info("r1", port=1),)))
        await router.call(CALL)
        router.update(ReplicaSet((info("r1", port=2),)))
        await router.call(CALL)
        first, second = fleet.connections
        assert first.closed and (first.info.port, second.info.port) == (1, 2) and not second.closed

    run(test)


def test_a_stream_is_retried_until_its_first_item_then_errors_propagate():
    async def test(router: Router, fleet: Fleet, events: dict[str, list[Any]]) -> None:
        router.update(replica_set("r1", "r2"))
        fleet.mode["r1"] = "reject"
        assert [item async for item in router.stream(STREAM)] == [("r2", 0), ("r2", 1), ("r2", 2)]
        fleet.mode["r2"] = "dies-mid-stream"
        seen = []
        with pytest.raises(NotSent):
            async for item in router.stream(STREAM):
                seen.append(item)
        assert seen == [("r2", 0)]  # not retried once items were delivered
        assert all(request is STREAM for _, request in fleet.sent)  # passed on unchanged

    run(test)


def test_closing_the_router_fails_waiting_requests():
    async def test(router: Router, fleet: Fleet, events: dict[str, list[Any]]) -> None:
        router.update(replica_set("r1", max_ongoing=1))
        fleet.mode["r1"] = "hold"
        running = asyncio.ensure_future(router.call(CALL))
        waiting = asyncio.ensure_future(router.call(CALL))
        await until(lambda: router.num_queued == 1, "one waiting")
        router.close()
        with pytest.raises(DeploymentUnavailableError, match="shut down"):
            await waiting
        assert fleet.connections[0].closed
        running.cancel()

    run(test)


def test_a_request_backing_off_after_a_reject_resumes_even_when_time_moves_between_checks():
    """The clock moves 3 ms between any two reads (a busy loop): the backoff after the REJECT ends
    between deciding the replica is blocked and starting to wait. The wait must still end."""

    class SteppingClock:
        def __init__(self) -> None:
            self.now = 0.0

        def __call__(self) -> float:
            self.now += 0.003
            return self.now

    async def main() -> None:
        fleet = Fleet()
        router = Router(DEP, fleet, local_node_id="node", rng=random.Random(0), clock=SteppingClock())
        router.update(replica_set("r1", max_ongoing=2))
        fleet.mode["r1"] = "reject-once"
        try:
            assert await asyncio.wait_for(router.call(CALL), 2.0) == "r1"
        finally:
            router.close()
        assert [r for r, _ in fleet.sent] == ["r1", "r1"]  # rejected once, then served by the same replica

    asyncio.run(main())



def test_a_queued_request_cancelled_just_after_its_wake_up_hands_the_free_slot_on():
    async def test(router: Router, fleet: Fleet, events: dict[str, list[Any]]) -> None:
        router.update(replica_set("r1", max_ongoing=1))
        fleet.mode["r1"] = "hold"
        busy = asyncio.ensure_future(router.call(CALL))
        await until(lambda: fleet.held_by("r1") == 1, "the slot taken")
        first = asyncio.ensure_future(router.call(CALL))
        second = asyncio.ensure_future(router.call(CALL))
        await until(lambda: router.num_queued == 2, "two requests queued")
        fleet.mode["r1"] = "ok"
        fleet.release_one("r1")  # the slot frees: the first waiter is woken ...
        await until(lambda: busy.done(), "the held request answered")
        first.cancel()  # ... and its client leaves before it runs
        assert await asyncio.wait_for(second, 2.0) == "r1"
        assert first.cancelled()

    run(test)


# --------------------------------------------------------------------------- replicas dying mid-request


def test_a_request_in_flight_when_its_replica_dies_is_not_sent_again_by_default():
    async def test(router: Router, fleet: Fleet, events: dict[str, list[Any]]) -> None:
        router.update(replica_set("r1", "r2"))
        fleet.mode.update(r1="dies", r2="dies")
        with pytest.raises(ConnectionLost):
            await router.call(CALL)  # it may have run
        assert len(fleet.ran) == 1 and len(fleet.sent) == 1

    run(test)


def test_an_idempotent_request_goes_to_another_replica_after_its_replica_dies():
    async def test(router: Router, fleet: Fleet, events: dict[str, list[Any]]) -> None:
        router.update(replica_set("r1"))
        fleet.mode["r1"] = "dies"
        call = asyncio.ensure_future(router.call(CALL, retries=1))
        await until(lambda: fleet.ran == ["r1"] and router.num_queued == 1, "the retry waiting for a replica")
        router.update(replica_set("r1", "r2"))  # the controller's replacement
        assert await call == "r2"
        assert fleet.ran == ["r1"] and events["unreachable"] == ["r1"], "the dead replica is not chosen again"

    run(test)


def test_retries_after_deaths_are_bounded():
    async def test(router: Router, fleet: Fleet, events: dict[str, list[Any]]) -> None:
        names = [f"r{i}" for i in range(6)]
        router.update(replica_set(*names))
        for name in names:
            fleet.mode[name] = "dies"
        with pytest.raises(ConnectionLost):
            await router.call(CALL, retries=MAX_IDEMPOTENT_RETRIES)
        assert len(fleet.ran) == MAX_IDEMPOTENT_RETRIES + 1, "a request that kills replicas stops after a few"

    run(test)


def test_a_stream_is_sent_again_only_before_its_first_item():
    async def test(router: Router, fleet: Fleet, events: dict[str, list[Any]]) -> None:
        router.update(replica_set("r1"))
        fleet.mode["r1"] = "dies"

        async def collect() -> list[Any]:
            return [item async for item in router.stream(STREAM, retries=1)]

        stream = asyncio.ensure_future(collect())
        await until(lambda: fleet.ran == ["r1"] and router.num_queued == 1, "the retry waiting for a replica")
        router.update(replica_set("r1", "r2"))
        assert await stream == [("r2", 0), ("r2", 1), ("r2", 2)]
        fleet.mode["r2"] = "lost-mid-stream"
        got = []
        with pytest.raises(ConnectionLost):
            async for item in router.stream(STREAM, retries=1):
                got.append(item)
        assert got == [("r2", 0)], "after an item was yielded, nothing is repeated"
        assert len(fleet.sent) == 3

    run(test)


# --------------------------------------------------------------------------- no replica running


def test_with_a_bound_a_request_waits_for_a_first_replica_only_that_long():
    async def test(router: Router, fleet: Fleet, events: dict[str, list[Any]]) -> None:
        router.update(ReplicaSet(waiting="Replica ab12 has been in __init__ for 40 s."))
        with pytest.raises(DeploymentUnavailableError) as caught:
            await router.call(CALL, no_replica_timeout_s=0.05)
        assert str(caught.value) == (
            "No replica of deployment 'Model' of application 'app' is running yet (waited 0.05 s). "
            "Replica ab12 has been in __init__ for 40 s."
        )
        assert router.num_queued == 0
        waiting = asyncio.ensure_future(router.call(CALL, no_replica_timeout_s=30.0))
        await until(lambda: router.num_queued == 1, "queued for a first replica")
        router.update(replica_set("r1"))
        assert await waiting == "r1", "a replica that comes up in time takes the request"

    run(test)


def test_the_bound_does_not_apply_while_replicas_are_busy():
    async def test(router: Router, fleet: Fleet, events: dict[str, list[Any]]) -> None:
        router.update(replica_set("r1", max_ongoing=1))
        fleet.mode["r1"] = "hold"
        running = asyncio.ensure_future(router.call(CALL))
        await until(lambda: len(fleet.held) == 1, "the replica busy")
        queued = asyncio.ensure_future(router.call(CALL, no_replica_timeout_s=0.01))
        await until(lambda: router.num_queued == 1, "queued behind it")
        await asyncio.sleep(0.05)  # well past the bound: a busy replica is not a missing one
        assert not queued.done()
        fleet.mode["r1"] = "ok"
        fleet.release_all()
        assert [await running, await queued] == ["r1", "r1"]

    run(test)


def test_with_a_bound_a_request_also_gives_up_when_no_replica_can_be_reached():
    async def test(router: Router, fleet: Fleet, events: dict[str, list[Any]]) -> None:
        router.update(replica_set("r1", "r2"))
        fleet.mode.update(r1="unreachable", r2="unreachable")  # e.g. this caller cannot connect at all
        with pytest.raises(DeploymentUnavailableError, match="could be reached from here \\(waited 0.05 s\\)"):
            await router.call(CALL, no_replica_timeout_s=0.05)
        assert sorted(events["unreachable"]) == ["r1", "r2"]

    run(test)


def test_a_replica_whose_connection_cannot_be_made_does_not_leak_its_slot():
    async def test(router: Router, fleet: Fleet, events: dict[str, list[Any]]) -> None:
        def broken_connect(info: ReplicaInfo) -> Any:
            raise OSError("no route")

        router._connect = broken_connect
        router.update(replica_set("r1", max_ongoing=1))
        for _ in range(3):
            with pytest.raises(OSError):
                await router.call(CALL)
        assert router._in_flight["r1"] == 0

    run(test)


def model_call(model_id: str) -> Request:
    return Request(RequestKind.CALL, "__call__", (), {}, model_id)


def test_two_models_alternating_over_two_replicas_each_stay_on_one_replica_before_any_report():
    async def test(router: Router, fleet: Fleet, events: dict[str, list[Any]]) -> None:
        router.update(replica_set("r1", "r2", max_ongoing=4))
        for _ in range(10):
            await router.call(model_call("m1"))
            await router.call(model_call("m2"))
        by_model: dict[str, set[str]] = {}
        for replica, request in fleet.sent:
            by_model.setdefault(request.model_id, set()).add(replica)
        assert len(by_model["m1"]) == 1 and len(by_model["m2"]) == 1  # no model was sent to both replicas
        assert by_model["m1"] != by_model["m2"]  # the second model went to the replica holding none

    run(test)


def test_the_models_the_controller_publishes_steer_requests_to_their_holders():
    async def test(router: Router, fleet: Fleet, events: dict[str, list[Any]]) -> None:
        base = replica_set("r1", "r2", "r3", max_ongoing=4)
        router.update(ReplicaSet(base.replicas, 4, models={"r2": ("m7",), "r3": ("m1", "m2")}))
        answers = [await router.call(model_call("m7")) for _ in range(5)]
        assert answers == ["r2"] * 5
        assert await router.call(model_call("new")) == "r1"  # the replica holding no model loads a new one
        assert await router.call(CALL) in ("r1", "r2", "r3")  # a request with no model is routed by load alone

    run(test)


def test_a_model_whose_holder_is_full_is_sent_to_another_replica_rather_than_queued():
    async def test(router: Router, fleet: Fleet, events: dict[str, list[Any]]) -> None:
        base = replica_set("r1", "r2", max_ongoing=1)
        router.update(ReplicaSet(base.replicas, 1, models={"r1": ("m1",)}))
        fleet.mode["r1"] = "hold"
        first = asyncio.ensure_future(router.call(model_call("m1")))
        await until(lambda: fleet.held_by("r1") == 1, "the holder busy")
        assert await router.call(model_call("m1")) == "r2"
        fleet.release_all()
        assert await first == "r1"

    run(test)


class FakeLargeCalls:
    """The object-store path: records what went through it; ``reject_first`` makes one replica refuse once."""

    def __init__(self, reject_first: str = "") -> None:
        self.calls: list[tuple[str, Request]] = []
        self.taken: list[tuple[str, str]] = []
        self.forgotten: list[str] = []
        self.reject_first = reject_first

    async def call(self, dep: DeploymentID, replica_id: str, request: Request) -> Any:
        self.calls.append((replica_id, request))
        if replica_id == self.reject_first:
            self.reject_first = ""
            raise Rejected()
        return f"large from {replica_id}"

    async def take(self, dep: DeploymentID, replica_id: str, token: str) -> Any:
        self.taken.append((replica_id, token))
        return f"stashed {token} from {replica_id}"

    def forget(self, dep: DeploymentID, replica_id: str) -> None:
        self.forgotten.append(replica_id)


def run_with_large(test: Callable[[Router, Fleet, FakeLargeCalls], Awaitable[Any]], large: FakeLargeCalls) -> Any:
    async def main() -> Any:
        fleet = Fleet()
        router = Router(DEP, fleet, local_node_id="node", rng=random.Random(0), large_calls=large)
        try:
            return await asyncio.wait_for(test(router, fleet, large), 30)
        finally:
            router.close()

    return asyncio.run(main())


def test_a_call_too_large_for_the_channel_goes_to_the_same_replica_through_the_object_store():
    async def test(router: Router, fleet: Fleet, large: FakeLargeCalls) -> None:
        router.update(replica_set("r1", max_ongoing=1))
        fleet.mode["r1"] = "large"
        assert await router.call(CALL) == "large from r1"
        assert [r for r, _ in large.calls] == ["r1"]
        assert router._in_flight["r1"] == 0  # its slot was counted and given back

    run_with_large(test, FakeLargeCalls())


def test_a_large_call_the_replica_rejects_is_sent_elsewhere():
    async def test(router: Router, fleet: Fleet, large: FakeLargeCalls) -> None:
        router.update(replica_set("r1", "r2"))
        fleet.mode.update(r1="large", r2="large")
        answers = [await router.call(CALL) for _ in range(20)]  # r1 is chosen at some point, and refuses once
        tried = [r for r, _ in large.calls]
        first_r1 = tried.index("r1")
        assert tried[first_r1 + 1] == "r2" and answers[first_r1] == "large from r2"
        assert len(tried) == 21  # one refusal, then each of the 20 calls answered once

    run_with_large(test, FakeLargeCalls(reject_first="r1"))


def test_a_large_reply_kept_by_the_replica_is_taken_from_it_and_a_departed_replica_is_forgotten():
    async def test(router: Router, fleet: Fleet, large: FakeLargeCalls) -> None:
        router.update(replica_set("r1"))
        fleet.mode["r1"] = "stashed"
        assert await router.call(CALL) == "stashed t-1 from r1"
        assert large.taken == [("r1", "t-1")]
        router.update(replica_set("r2"))
        assert large.forgotten == ["r1"]

    run_with_large(test, FakeLargeCalls())
