"""What a replica records of each request it runs: Ray Serve's replica metrics by route, the access line
(``CALL method OK`` for handle calls, the status for HTTP), the live tally, and the request's id for the
calls it makes."""

from __future__ import annotations

import asyncio
import contextvars
from pathlib import Path
from typing import Any

import pytest

from serve_nb.core import metrics as m
from serve_nb.core.log_format import Component, LineFields, LoggingConfig
from serve_nb.core.metrics import Drained, SeriesStore, growth
from serve_nb.data.context import current_request, request_for_call, set_request
from serve_nb.data.replica_observer import RequestObserver
from serve_nb.data.request import Request, RequestKind
from serve_nb.data.serve_log import ServeLog

TAGS = ("Model", "r1", "app")


class Recorded:
    """The replica's store, read as the exporter reads it."""

    def __init__(self, store: SeriesStore) -> None:
        self.store = store

    def drain(self) -> Drained:
        return growth(self.store.snapshot(), ({}, {}, {}))


def observer(tmp_path: Path) -> tuple[RequestObserver, Recorded, ServeLog]:
    log = ServeLog(LineFields(Component.REPLICA, "r1", "app", "Model", "r1"), LoggingConfig(), str(tmp_path / "r.log"))
    obs = RequestObserver("app", "Model", "r1", SeriesStore(), log)
    return obs, Recorded(obs.store), log


def call(method: str = "predict", request_id: str = "req-1", route: str = "/m", args: tuple = ()) -> Request:
    return Request(RequestKind.CALL, method, args, {}, "", request_id, route)


class Model:
    def predict(self, x: int) -> int:
        if x < 0:
            raise KeyError("no such row")
        return 2 * x

    async def slow(self) -> None:
        await asyncio.sleep(10)


def replica_with(obs: RequestObserver) -> Any:
    from test_replica_request_path import make_core

    core = make_core(Model())
    core.observe_with(obs)
    return core


def test_handle_calls_are_counted_per_route_and_logged_with_their_outcome(tmp_path: Path):
    obs, buffer, log = observer(tmp_path)
    core = replica_with(obs)

    async def scenario() -> None:
        assert await core.handle(call(args=(3,))) == 6
        with pytest.raises(KeyError):
            await core.handle(call(request_id="req-2", args=(-1,)))
        task = asyncio.ensure_future(core.handle(call("slow", request_id="req-3")))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(scenario())
    finally:
        log.close()
    drained = buffer.drain()
    assert (m.REPLICA_REQUESTS, (*TAGS, "/m"), 3.0) in drained.counters
    assert (m.REPLICA_ERRORS, (*TAGS, "/m", "KeyError"), 1.0) in drained.counters
    assert sum(drained.histograms[0][2]) == 3
    lines = (tmp_path / "r.log").read_text().splitlines()
    assert [line.split(" -- ")[1].rsplit(" ", 1)[0] for line in lines] == [
        "CALL predict OK", "CALL predict ERROR", "CALL slow CANCELLED"]
    assert [line.split(" ")[5] for line in lines] == ["req-1", "req-2", "req-3"]
    snapshot = obs.tally.drain()
    assert snapshot is not None and (snapshot.count, snapshot.errors) == (3, 1)


class Pages:
    """An HTTP deployment: ``/busy`` answers 503, ``/boom`` raises, ``/slow`` never answers."""

    def __init__(self) -> None:
        self.slow_started = asyncio.Event()

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import PlainTextResponse

        if request.url.path.endswith("/boom"):
            raise RuntimeError("broken page")
        if request.url.path.endswith("/slow"):
            self.slow_started.set()
            await asyncio.sleep(10)
        return PlainTextResponse("busy", status_code=503)


def http_request(path: str, request_id: str) -> Request:
    scope = {"type": "http", "method": "POST", "path": path, "root_path": "", "query_string": b"", "headers": []}
    return Request(RequestKind.HTTP, "", (scope, b"", False, False), {}, "", request_id, "/m")


def test_an_http_requests_line_has_the_status_the_app_answered_or_499_when_cancelled(tmp_path: Path):
    obs, buffer, log = observer(tmp_path)
    from test_replica_request_path import make_core

    pages = Pages()
    core = make_core(pages)
    core.observe_with(obs)

    async def scenario() -> list[int]:
        pages.slow_started = asyncio.Event()  # on this loop
        statuses = []
        for path, request_id in (("/m/busy", "req-busy"), ("/m/boom", "req-boom")):
            batches = [batch async for batch in core.handle(http_request(path, request_id))]
            statuses.append(batches[0][0]["status"])
        slow = asyncio.ensure_future(anext(core.handle(http_request("/m/slow", "req-slow"))))
        await pages.slow_started.wait()
        slow.cancel()
        await asyncio.gather(slow, return_exceptions=True)
        return statuses

    try:
        assert asyncio.run(scenario()) == [503, 500]
    finally:
        log.close()
    lines = (tmp_path / "r.log").read_text().splitlines()
    access = [line for line in lines if " -- POST " in line]
    assert len(access) == 3
    assert access[0].startswith("ERROR ") and " req-busy -- POST /m 503 " in access[0]
    assert access[1].startswith("ERROR ") and " req-boom -- POST /m 500 " in access[1]
    assert access[2].startswith("INFO ") and " req-slow -- POST /m 499 " in access[2], "cancelled: the client left"
    snapshot = obs.tally.drain()
    assert snapshot is not None and snapshot.errors == 2, "a 5xx answer is an error of this deployment"
    assert (m.REPLICA_REQUESTS, (*TAGS, "/m"), 3.0) in buffer.drain().counters


def test_a_call_made_while_handling_a_request_carries_that_requests_id_and_route():
    def in_request() -> tuple[tuple[str, str], tuple[str, str]]:
        set_request("req-outer", "/front")
        return current_request(), request_for_call()

    inside, passed_on = contextvars.copy_context().run(in_request)
    assert inside == passed_on == ("req-outer", "/front")
    fresh_id, route = contextvars.copy_context().run(request_for_call)
    assert fresh_id and fresh_id != "req-outer" and route == ""
    assert contextvars.copy_context().run(request_for_call)[0] != fresh_id, "a new id per call outside a request"


def test_a_replica_without_metrics_or_log_still_tallies(tmp_path: Path):
    obs = RequestObserver("app", "Model", "r1", None, None)
    assert asyncio.run(replica_with(obs).handle(call(args=(1,)))) == 2
    snapshot = obs.tally.drain()
    assert snapshot is not None and snapshot.count == 1
