"""``@serve.multiplexed`` on plain asyncio (no Ray): models cached per replica, least recently used out first
with ``__del__`` called, one load at a time, shared loads, and Ray Serve's validation."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

import serve_nb as serve
from serve_nb.data import context
from serve_nb.multiplex import multiplexed


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


class Model:
    released: list[str] = []

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    def __del__(self) -> None:
        Model.released.append(self.model_id)


class AsyncModel:
    released: list[str] = []

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    async def __del__(self) -> None:  # type: ignore[misc] - Ray Serve awaits an async __del__ on eviction
        AsyncModel.released.append(self.model_id)


class Replica:
    def __init__(self, max_models: int = 2, model_cls: type = Model) -> None:
        self.loads: list[str] = []
        self.model_cls = model_cls
        self.loading_now = 0
        self.most_at_once = 0
        Model.released, AsyncModel.released = [], []

    @multiplexed(max_num_models_per_replica=2)
    async def get_model(self, model_id: str) -> Any:
        self.loads.append(model_id)
        self.loading_now += 1
        self.most_at_once = max(self.most_at_once, self.loading_now)
        for _ in range(3):
            await asyncio.sleep(0)
        self.loading_now -= 1
        return self.model_cls(model_id)


def test_a_loaded_model_is_reused_and_the_least_recently_used_goes_first_with_its_del_called():
    replica = Replica()

    async def scenario() -> None:
        a = await replica.get_model("a")
        assert await replica.get_model("a") is a
        await replica.get_model("b")
        await replica.get_model("a")  # "b" is now the least recently used
        await replica.get_model("c")

    run(scenario())
    assert replica.loads == ["a", "b", "c"] and Model.released[:1] == ["b"]
    assert replica.__dict__["__serve_nb_models_get_model"].model_ids == ["a", "c"]


def test_an_async_del_is_awaited_on_eviction():
    replica = Replica(model_cls=AsyncModel)

    async def scenario() -> None:
        for model_id in ("a", "b", "c"):
            await replica.get_model(model_id)

    run(scenario())
    assert AsyncModel.released == ["a"]
    # Models still cached are collected later, when Python would call an async __del__ without awaiting it.
    # (AsyncModel serves this test only, so it keeps the plain one.)
    AsyncModel.__del__ = lambda self: None  # type: ignore[method-assign, assignment]


def test_callers_asking_for_a_model_being_loaded_share_that_load_and_loads_run_one_at_a_time():
    replica = Replica()

    async def scenario() -> list[Any]:
        return await asyncio.gather(replica.get_model("a"), replica.get_model("a"), replica.get_model("b"))

    first, second, other = run(scenario())
    assert first is second and other.model_id == "b"
    assert replica.loads == ["a", "b"] and replica.most_at_once == 1


def test_each_instance_keeps_its_own_models():
    one, two = Replica(), Replica()

    async def scenario() -> None:
        await one.get_model("a")
        await two.get_model("a")

    run(scenario())
    assert one.loads == ["a"] and two.loads == ["a"]


def test_a_failed_load_reaches_every_waiting_caller_and_the_next_call_tries_again():
    attempts: list[str] = []

    @multiplexed(max_num_models_per_replica=-1)
    async def flaky(model_id: str) -> str:
        attempts.append(model_id)
        await asyncio.sleep(0)
        if len(attempts) == 1:
            raise OSError("download failed")
        return f"model-{model_id}"

    async def scenario() -> tuple[list[Any], str]:
        failed = await asyncio.gather(flaky("m"), flaky("m"), return_exceptions=True)
        return failed, await flaky("m")

    failed, loaded = run(scenario())
    assert [type(e) for e in failed] == [OSError, OSError] and loaded == "model-m" and attempts == ["m", "m"]


def test_validation_in_ray_serves_words():
    async def loader(model_id: str) -> str:
        return model_id

    def sync_loader(model_id: str) -> str:
        return model_id

    with pytest.raises(TypeError, match="can only be used to decorate async functions or methods"):
        multiplexed(sync_loader)
    with pytest.raises(TypeError, match="max_num_models_per_replica must be an integer"):
        multiplexed(max_num_models_per_replica="3")
    with pytest.raises(ValueError, match="max_num_models_per_replica must be positive"):
        multiplexed(max_num_models_per_replica=0)
    decorated = multiplexed(loader)
    with pytest.raises(TypeError, match="The model ID must be a string"):
        run(decorated(3))
    with pytest.raises(ValueError, match="The model ID cannot be empty"):
        run(decorated(""))


def test_the_replica_reports_the_models_it_holds_and_those_being_loaded():
    gate: asyncio.Event | None = None

    class Owner:
        @serve.multiplexed(max_num_models_per_replica=2)
        async def get_model(self, model_id: str) -> str:
            if model_id == "r-slow":
                await gate.wait()  # type: ignore[union-attr]
            return model_id.upper()

    def reported() -> tuple[str, ...]:  # other tests' loaders live on in this process: look at this one's ids
        return tuple(m for m in context.loaded_model_ids() if m.startswith("r-"))

    async def scenario() -> list[tuple[str, ...]]:
        nonlocal gate
        gate = asyncio.Event()
        owner = Owner()
        reports = [reported()]
        await owner.get_model("r-a")
        reports.append(reported())
        slow = asyncio.ensure_future(owner.get_model("r-slow"))
        await asyncio.sleep(0)
        reports.append(reported())  # loading counts: requests meanwhile should come here
        gate.set()
        await slow
        await owner.get_model("r-b")  # evicts "r-a", the least recently used
        reports.append(reported())
        del owner
        gc.collect()
        reports.append(reported())  # its models went with it
        return reports

    assert asyncio.run(scenario()) == [(), ("r-a",), ("r-a", "r-slow"), ("r-b", "r-slow"), ()]
