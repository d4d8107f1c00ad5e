"""Whether the controller answers, as views hear it: probed only while watched, each change said once."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from serve_nb.data.controller_watch import ControllerWatch

from loop_turns import until

TIMEOUT_S = 0.05  # the probe's bound in these tests: a probe left unanswered fails after it


class Harness:
    """A controller whose every probe is a future the test answers, fails, or leaves hanging."""

    def __init__(self) -> None:
        self.probes: list[asyncio.Future[None]] = []
        self.delays: list[float] = []
        self.heard: dict[str, list[bool]] = {}
        self.watch = ControllerWatch(asyncio.get_running_loop(), self._probe, sleep=self._sleep,
                                     interval_s=2.0, timeout_s=TIMEOUT_S)

    def _probe(self) -> Awaitable[None]:
        fut = asyncio.get_running_loop().create_future()
        self.probes.append(fut)
        return fut

    async def _sleep(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)

    def listen(self, name: str):
        return self.watch.watch(self.heard.setdefault(name, []).append)

    async def probe(self, n: int) -> asyncio.Future[None]:
        """The n-th probe (1-based), once it is outstanding."""
        await until(lambda: len(self.probes) >= n, f"probe {n}")
        return self.probes[n - 1]


async def within(condition: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    """For the probe timeout, which runs on the loop's clock: wait up to ``seconds`` of it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.005)


def run(test: Callable[[Harness], Awaitable[None]]) -> None:
    async def main() -> None:
        h = Harness()
        try:
            await asyncio.wait_for(test(h), 30)
        finally:
            h.watch.close()
            await asyncio.sleep(0)

    asyncio.run(main())


def test_nobody_watching_means_no_calls_to_the_controller():
    async def test(h: Harness) -> None:
        for _ in range(100):
            await asyncio.sleep(0)
        assert h.probes == [] and h.watch.reachable is None

    run(test)


def test_an_answering_controller_is_said_reachable_once_and_probed_at_the_interval():
    async def test(h: Harness) -> None:
        h.listen("view")
        (await h.probe(1)).set_result(None)
        (await h.probe(2)).set_result(None)
        await h.probe(3)
        assert h.heard["view"] == [True]  # no change, nothing more said
        assert h.delays == [2.0, 2.0]

    run(test)


def test_a_probe_left_unanswered_says_unreachable_and_a_later_answer_says_reachable_again():
    async def test(h: Harness) -> None:
        h.listen("view")
        (await h.probe(1)).set_result(None)
        hanging = await h.probe(2)
        await within(lambda: h.heard["view"] == [True, False], "unreachable after the probe's timeout")
        assert hanging.cancelled()  # the unanswered call is not awaited for ever
        (await h.probe(3)).set_result(None)
        await until(lambda: h.heard["view"] == [True, False, True], "reachable again")
        assert h.watch.reachable is True

    run(test)


def test_a_failing_call_says_unreachable_at_once():
    async def test(h: Harness) -> None:
        h.listen("view")
        (await h.probe(1)).set_exception(RuntimeError("controller actor died"))
        await until(lambda: h.heard["view"] == [False], "unreachable")
        (await h.probe(2)).set_exception(RuntimeError("still restarting"))
        await h.probe(3)
        assert h.heard["view"] == [False]

    run(test)


def test_a_late_watcher_hears_the_known_state_at_once_and_a_cancelled_one_hears_nothing_more():
    async def test(h: Harness) -> None:
        first = h.listen("first")
        (await h.probe(1)).set_result(None)
        await until(lambda: h.heard["first"] == [True], "the first watcher")
        h.listen("late")
        await until(lambda: h.heard["late"] == [True], "the late watcher, before any new probe answers")
        first.cancel()
        (await h.probe(2)).set_exception(RuntimeError("gone"))
        await until(lambda: h.heard["late"] == [True, False], "the late watcher hears the change")
        assert h.heard["first"] == [True]

    run(test)


def test_probing_stops_once_the_last_watcher_cancels():
    async def test(h: Harness) -> None:
        sub = h.listen("view")
        (await h.probe(1)).set_result(None)
        outstanding = await h.probe(2)
        sub.cancel()
        await asyncio.sleep(0)  # the cancel lands on the loop
        outstanding.set_result(None)
        for _ in range(100):
            await asyncio.sleep(0)
        assert len(h.probes) == 2

    run(test)


def test_a_broken_callback_does_not_stop_the_others_hearing():
    async def test(h: Harness) -> None:
        def broken(reachable: bool) -> None:
            raise ValueError("view bug")

        h.watch.watch(broken)
        h.listen("view")
        (await h.probe(1)).set_result(None)
        await until(lambda: h.heard["view"] == [True], "the working view")

    run(test)
