"""``@serve.batch`` on plain asyncio (no Ray): how batches form and close, how answers and errors reach
callers, methods, streaming, concurrency, live settings and validation, with Ray Serve's wording."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import serve_nb as serve
from serve_nb.data import context
from serve_nb.exceptions import RayServeException

#: Long enough that a batch never closes on time in these tests unless it is meant to.
NEVER_S = 30.0


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_batches_close_when_full_and_leftovers_start_the_next_at_once():
    seen: list[list[int]] = []

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0)
    async def double(xs: list[int]) -> list[int]:
        seen.append(list(xs))
        return [2 * x for x in xs]

    async def scenario() -> list[int]:
        return await asyncio.gather(*(double(i) for i in range(10)))

    assert run(scenario()) == [2 * i for i in range(10)]
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_batch_waits_for_more_items_until_its_timeout():
    seen: list[list[int]] = []

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=NEVER_S)
    async def echo(xs: list[int]) -> list[int]:
        seen.append(list(xs))
        return xs

    async def scenario() -> list[int]:
        first = asyncio.ensure_future(echo(1))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not first.done(), "one item waits for company"
        rest = [asyncio.ensure_future(echo(i)) for i in range(2, 9)]
        return [await first, *[await r for r in rest]]

    assert run(scenario()) == list(range(1, 9))
    assert seen == [list(range(1, 9))], "closed by size, long before the timeout"


def test_methods_get_self_and_each_instance_batches_on_its_own():
    class Model:
        def __init__(self, offset: int) -> None:
            self.offset = offset
            self.batches: list[list[int]] = []

        @serve.batch(max_batch_size=3, batch_wait_timeout_s=0)
        async def predict(self, xs: list[int]) -> list[int]:
            self.batches.append(list(xs))
            return [x + self.offset for x in xs]

    a, b = Model(100), Model(200)

    async def scenario() -> list[int]:
        return await asyncio.gather(a.predict(1), b.predict(1), a.predict(2), b.predict(2))

    assert run(scenario()) == [101, 201, 102, 202]
    assert a.batches == [[1, 2]] and b.batches == [[1, 2]]


def test_arguments_are_batched_position_by_position():
    @serve.batch(max_batch_size=2, batch_wait_timeout_s=NEVER_S)
    async def combine(xs: list[int], ys: list[str], *, sep: list[str]) -> list[str]:
        return [f"{x}{s}{y}" for x, y, s in zip(xs, ys, sep)]

    async def scenario() -> list[str]:
        return await asyncio.gather(combine(1, "a", sep="-"), combine(2, "b", sep="+"))

    assert run(scenario()) == ["1-a", "2+b"]


def test_a_result_of_the_wrong_length_fails_every_caller_in_ray_serves_words():
    @serve.batch(max_batch_size=2, batch_wait_timeout_s=NEVER_S)
    async def lossy(xs: list[int]) -> list[int]:
        return xs[:1]

    async def scenario() -> list[Any]:
        return await asyncio.gather(lossy(1), lossy(2), return_exceptions=True)

    errors = run(scenario())
    assert all(isinstance(e, RayServeException) for e in errors)
    assert str(errors[0]) == ("Batched function doesn't preserve batch size. The input list has length 2 but the "
                              "returned list has length 1.")


def test_an_exception_reaches_every_caller_of_its_batch():
    @serve.batch(max_batch_size=2, batch_wait_timeout_s=NEVER_S)
    async def broken(xs: list[int]) -> list[int]:
        raise ValueError("model failed")

    async def scenario() -> list[Any]:
        return await asyncio.gather(broken(1), broken(2), return_exceptions=True)

    assert [type(e) for e in run(scenario())] == [ValueError, ValueError]


def test_a_caller_that_gave_up_is_left_out_of_its_batch():
    seen: list[list[int]] = []

    @serve.batch(max_batch_size=3, batch_wait_timeout_s=NEVER_S)
    async def echo(xs: list[int]) -> list[int]:
        seen.append(list(xs))
        return xs

    async def scenario() -> list[int]:
        leaving = asyncio.ensure_future(echo(0))
        staying = [asyncio.ensure_future(echo(i)) for i in (1, 2)]
        await asyncio.sleep(0)
        leaving.cancel()
        late = asyncio.ensure_future(echo(3))
        return [await s for s in staying] + [await late]

    assert run(scenario()) == [1, 2, 3]
    assert seen == [[1, 2, 3]]


def test_new_settings_apply_from_the_next_batch():
    seen: list[int] = []

    @serve.batch(max_batch_size=2, batch_wait_timeout_s=0)
    async def size_of(xs: list[int]) -> list[int]:
        seen.append(len(xs))
        return xs

    async def scenario() -> None:
        await asyncio.gather(*(size_of(i) for i in range(4)))
        size_of.set_max_batch_size(4)
        size_of.set_batch_wait_timeout_s(NEVER_S)
        await asyncio.gather(*(size_of(i) for i in range(4)))

    run(scenario())
    assert seen == [2, 2, 4]
    assert size_of._get_max_batch_size() == 4 and size_of._get_batch_wait_timeout_s() == NEVER_S
    with pytest.raises(ValueError, match="max_batch_size must be an integer >= 1, got 0"):
        size_of.set_max_batch_size(0)


def test_batch_size_fn_counts_what_fills_a_batch():
    seen: list[list[str]] = []

    @serve.batch(max_batch_size=6, batch_wait_timeout_s=0, batch_size_fn=lambda texts: sum(len(t) for t in texts))
    async def tokens(texts: list[str]) -> list[int]:
        seen.append(list(texts))
        return [len(t) for t in texts]

    async def scenario() -> list[int]:
        return await asyncio.gather(*(tokens(t) for t in ("aaa", "bb", "cccc", "d")))

    assert run(scenario()) == [3, 2, 4, 1]
    assert seen == [["aaa", "bb"], ["cccc", "d"]]


def test_up_to_max_concurrent_batches_run_at_once():
    running, peak = [0], [0]

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0, max_concurrent_batches=2)
    async def slow(xs: list[int]) -> list[int]:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        for _ in range(5):
            await asyncio.sleep(0)
        running[0] -= 1
        return xs

    async def scenario() -> list[int]:
        return await asyncio.gather(*(slow(i) for i in range(4)))

    assert run(scenario()) == [0, 1, 2, 3]
    assert peak[0] == 2


def test_a_streaming_batch_sends_each_caller_its_items_and_stopiteration_ends_one_early():
    @serve.batch(max_batch_size=2, batch_wait_timeout_s=NEVER_S)
    async def count(limits: list[int]):
        for step in range(3):
            yield [step if step < limit else StopIteration for limit in limits]

    async def collect(limit: int) -> list[int]:
        return [item async for item in count(limit)]

    async def scenario() -> list[list[int]]:
        return await asyncio.gather(collect(1), collect(3))

    assert run(scenario()) == [[0], [0, 1, 2]]


def test_validation_at_decoration_in_ray_serves_words():
    async def fine(xs: list[int]) -> list[int]:
        return xs

    def not_async(xs: list[int]) -> list[int]:
        return xs

    with pytest.raises(TypeError, match="Functions decorated with @serve.batch must be 'async def'"):
        serve.batch(not_async)
    with pytest.raises(TypeError, match="max_batch_size must be integer >= 1, got 2.5"):
        serve.batch(max_batch_size=2.5)(fine)
    with pytest.raises(ValueError, match="max_batch_size must be an integer >= 1, got 0"):
        serve.batch(max_batch_size=0)
    with pytest.raises(ValueError, match="batch_wait_timeout_s must be a float >= 0, got -1"):
        serve.batch(batch_wait_timeout_s=-1)
    with pytest.raises(TypeError, match="max_concurrent_batches must be an integer >= 1, got 0"):
        serve.batch(max_concurrent_batches=0)
    with pytest.raises(TypeError, match="batch_size_fn must be a callable or None"):
        serve.batch(batch_size_fn=3)
    assert serve.batch(max_batch_size=4.0)(fine)._get_max_batch_size() == 4


def test_a_replica_whose_max_ongoing_requests_cannot_fill_a_batch_warns_once(caplog):
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0)
    async def echo(xs: list[int]) -> list[int]:
        return xs

    async def scenario() -> None:
        await asyncio.gather(*(echo(i) for i in range(3)))

    context.set_max_ongoing_requests(5)
    try:
        with caplog.at_level(logging.WARNING, logger="serve_nb"):
            run(scenario())
            run(scenario())
    finally:
        context._max_ongoing_requests = None
    warnings = [r.getMessage() for r in caplog.records if "max_batch_size" in r.getMessage()]
    assert len(warnings) == 1 and "larger than `max_ongoing_requests` (5)" in warnings[0]


def test_a_decorated_generator_still_streams_after_travelling_by_value_as_replicas_receive_it():
    from ray import cloudpickle

    @serve.batch(max_batch_size=2, batch_wait_timeout_s=NEVER_S)
    async def count(limits: list[int]):
        for step in range(2):
            yield [step if step < limit else StopIteration for limit in limits]

    travelled = cloudpickle.loads(cloudpickle.dumps(count))

    async def collect(limit: int) -> list[int]:
        return [item async for item in travelled(limit)]

    async def scenario() -> list[list[int]]:
        return await asyncio.gather(collect(1), collect(2))

    assert run(scenario()) == [[0], [0, 1]]


def test_a_failing_batch_size_fn_fails_its_callers_instead_of_hanging_them():
    def broken_size(items: list[Any]) -> int:
        raise KeyError("size")

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0, batch_size_fn=broken_size)
    async def echo(xs: list[int]) -> list[int]:
        return xs

    async def scenario() -> list[Any]:
        return await asyncio.gather(echo(1), echo(2), return_exceptions=True)

    assert [type(e) for e in run(scenario())] == [KeyError, KeyError]


def test_batches_hold_one_models_items_and_the_function_sees_that_models_id():
    seen: list[tuple[str, list[int]]] = []

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0)
    async def predict(xs: list[int]) -> list[str]:
        model = serve.get_multiplexed_model_id()
        seen.append((model, list(xs)))
        return [f"{model}:{x}" for x in xs]

    async def as_model(model: str, x: int) -> str:
        context.set_multiplexed_model_id(model)  # this task's own context: as a request's in a replica
        return await predict(x)

    async def scenario() -> list[str]:
        return await asyncio.gather(*(as_model("a" if i % 2 == 0 else "b", i) for i in range(6)))

    assert run(scenario()) == ["a:0", "b:1", "a:2", "b:3", "a:4", "b:5"]
    assert seen == [("a", [0, 2, 4]), ("b", [1, 3, 5])]  # another model's callers keep their order and wait
    assert serve.get_multiplexed_model_id() == ""  # outside a request


def test_each_batch_size_is_recorded_for_the_replicas_report():
    @serve.batch(max_batch_size=3, batch_wait_timeout_s=0)
    async def echo(xs: list[int]) -> list[int]:
        return xs

    async def scenario() -> None:
        await asyncio.gather(*(echo(i) for i in range(7)))

    context.drain_batch_sizes()
    run(scenario())
    assert context.drain_batch_sizes() == [3, 3, 1]
    assert context.drain_batch_sizes() == []
