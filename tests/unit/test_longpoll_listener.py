"""The per-process long-poll listener against a fake controller whose calls the test answers."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from serve_nb.core.snapshots import Update
from serve_nb.data.longpoll import RETRY_BASE_S, RETRY_MAX_S, LongPollClient

from loop_turns import until


class FakeController:
    """``listen_for_change.options(...).remote(known)`` returns a future the test resolves."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], asyncio.Future[Any]]] = []
        self.unreachable = 0  # this many next calls raise at once, as for a dead actor handle

    @property
    def listen_for_change(self) -> "FakeController":
        return self

    def options(self, **_: Any) -> "FakeController":
        return self

    def remote(self, known: dict[str, Any]) -> asyncio.Future[Any]:
        if self.unreachable:
            self.unreachable -= 1
            raise RuntimeError("controller actor is dead")
        fut = asyncio.get_running_loop().create_future()
        self.calls.append((known, fut))
        return fut

    @property
    def outstanding(self) -> tuple[dict[str, Any], asyncio.Future[Any]]:
        known, fut = self.calls[-1]
        assert not fut.done()
        return known, fut


class Harness:
    def __init__(self) -> None:
        self.controller = FakeController()
        self.delays: list[float] = []
        self.client = LongPollClient(
            asyncio.get_running_loop(), lambda: self.controller, sleep=self._sleep, abandon=self._abandon
        )
        self.heard: dict[str, list[Any]] = {}

    def _abandon(self, poll: asyncio.Future[Any], call: asyncio.Future[Any]) -> None:
        poll.cancel()  # no Ray here: cancelling the await cancels the fake call

    async def _sleep(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)

    def listen(self, key: str, name: str) -> Any:
        heard = self.heard.setdefault(name, [])
        return self.client.subscribe(key, heard.append)

    async def next_call(self, n: int) -> tuple[dict[str, Any], asyncio.Future[Any]]:
        """Wait until the n-th call (1-based) to the controller is outstanding."""
        await until(lambda: len(self.controller.calls) >= n and not self.controller.calls[-1][1].done(), f"call {n}")
        assert len(self.controller.calls) == n
        return self.controller.outstanding


def run(test: Callable[[Harness], Awaitable[None]]) -> None:
    async def main() -> None:
        harness = Harness()
        try:
            await asyncio.wait_for(test(harness), 30)
        finally:
            harness.client.close()
            await asyncio.sleep(0)

    asyncio.run(main())


def test_updates_reach_subscribers_and_a_late_subscriber_gets_the_current_value_at_once():
    async def test(h: Harness) -> None:
        h.listen("routes", "a")
        known, fut = await h.next_call(1)
        assert known == {"routes": None}
        fut.set_result({"routes": Update("e1", 1, {"/": "app"})})
        known, fut = await h.next_call(2)
        assert known == {"routes": ("e1", 1)} and h.heard["a"] == [{"/": "app"}]
        h.listen("routes", "b")
        await until(lambda: h.heard.get("b") == [{"/": "app"}], "the current value for b")
        assert len(h.controller.calls) == 2 and not fut.done()  # a known key needs no new call
        fut.set_result({"routes": Update("e1", 2, {"/": "app2"})})
        await h.next_call(3)
        assert h.heard == {"a": [{"/": "app"}, {"/": "app2"}], "b": [{"/": "app"}, {"/": "app2"}]}

    run(test)


def test_a_new_key_interrupts_the_outstanding_call():
    async def test(h: Harness) -> None:
        h.listen("k1", "a")
        _, first = await h.next_call(1)
        h.listen("k2", "b")
        known, _ = await h.next_call(2)
        assert first.cancelled() and known == {"k1": None, "k2": None}

    run(test)


def test_an_unsubscribed_key_is_no_longer_asked_for_or_delivered():
    async def test(h: Harness) -> None:
        h.listen("k1", "a")
        sub = h.listen("k2", "b")
        await until(lambda: bool(h.controller.calls) and set(h.controller.calls[-1][0]) == {"k1", "k2"}, "both keys")
        _, fut = h.controller.outstanding
        calls = len(h.controller.calls)
        sub.cancel()  # lands on the loop before the answer below is handled
        fut.set_result({"k1": Update("e", 1, "one"), "k2": Update("e", 1, "two")})
        await h.next_call(calls + 1)
        known, _ = h.controller.outstanding
        assert known == {"k1": ("e", 1)}
        assert h.heard == {"a": ["one"], "b": []}

    run(test)


def test_controller_errors_back_off_exponentially_and_the_feed_recovers():
    async def test(h: Harness) -> None:
        h.controller.unreachable = 2
        h.listen("k", "a")
        _, fut = await h.next_call(1)
        assert h.delays == [RETRY_BASE_S * 2, RETRY_BASE_S * 4]
        fut.set_exception(RuntimeError("controller restarting"))
        _, fut = await h.next_call(2)
        assert h.delays[-1] == RETRY_BASE_S * 8
        fut.set_result({"k": Update("e", 1, "value")})
        _, fut = await h.next_call(3)
        assert h.heard["a"] == ["value"]
        h.controller.unreachable = 10
        fut.set_exception(RuntimeError("down again"))
        await h.next_call(4)
        assert h.delays[3] == RETRY_BASE_S * 2  # counting starts over after a success
        assert max(h.delays) == RETRY_MAX_S

    run(test)


def test_a_broken_callback_does_not_stop_the_others():
    async def test(h: Harness) -> None:
        def broken(value: Any) -> None:
            raise ValueError("subscriber bug")

        h.client.subscribe("k", broken)
        h.listen("k", "a")
        _, fut = await h.next_call(1)
        fut.set_result({"k": Update("e", 1, "v")})
        await h.next_call(2)
        assert h.heard["a"] == ["v"]

    run(test)


def test_close_tells_every_subscriber_none_once_and_stops_polling():
    async def test(h: Harness) -> None:
        h.listen("k1", "a")
        h.listen("k2", "b")
        await until(lambda: bool(h.controller.calls) and set(h.controller.calls[-1][0]) == {"k1", "k2"}, "both keys")
        calls = len(h.controller.calls)
        h.client.close()
        h.client.close()
        await until(lambda: h.heard == {"a": [None], "b": [None]}, "None for everyone")
        h.listen("k3", "c")
        for _ in range(10):
            await asyncio.sleep(0)
        assert h.heard == {"a": [None], "b": [None], "c": []} and len(h.controller.calls) == calls

    run(test)
