"""What the proxy records of each request: its id (kept or made, always returned), Ray Serve's proxy metrics
with the right labels, and one access line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from serve_nb.config import HTTPOptions
from serve_nb.core import metrics as m
from serve_nb.core.log_format import Component, LineFields, LoggingConfig
from serve_nb.core.metrics import Drained, SeriesStore, growth
from serve_nb.core.snapshots import LOGGING_KEY, ROUTES_KEY
from serve_nb.data.http.proxy import ProxyApp
from serve_nb.data.http.proxy_observer import MAX_REQUEST_ID_CHARS, ProxyObserver
from serve_nb.data.serve_log import ServeLog
from test_proxy_app import FakeClient, get, router_of, run_websocket, text_reply


class Recorded:
    """The proxy's store, read as the exporter reads it: what it gained since the last read."""

    def __init__(self) -> None:
        self.store = SeriesStore()
        self._last: tuple = ({}, {}, {})

    def drain(self) -> Drained:
        now = self.store.snapshot()
        gained, self._last = growth(now, self._last), now
        return gained


def recorded_app(tmp_path: Path) -> tuple[ProxyApp, FakeClient, Recorded, ServeLog]:
    """A proxy app whose log file is ``<logs_dir or tmp_path>/proxy.log``."""
    buffer = Recorded()

    def log_path(config: LoggingConfig) -> str:
        return str(Path(config.logs_dir or tmp_path) / "proxy.log")

    log = ServeLog(LineFields(Component.PROXY, "10.0.0.1"), LoggingConfig(), log_path(LoggingConfig()))
    client = FakeClient()
    app = ProxyApp(client, HTTPOptions(), ProxyObserver("node-1", "10.0.0.1", buffer.store, log, log_path))
    client.longpoll.callbacks[ROUTES_KEY]({"/a": ("a", "A")})
    return app, client, buffer, log


def test_a_clients_request_id_reaches_the_replica_and_comes_back(tmp_path: Path):
    app, client, _, log = recorded_app(tmp_path)
    try:
        response = asyncio.run(get(app, "/a/x", headers={"X-Request-ID": "trace-42"}))
    finally:
        log.close()
    assert response.headers["x-request-id"] == "trace-42"
    [request] = router_of(client).requests
    assert (request.request_id, request.route) == ("trace-42", "/a")


def test_without_a_usable_request_id_the_proxy_makes_one_and_returns_it(tmp_path: Path):
    app, client, _, log = recorded_app(tmp_path)
    try:
        plain = asyncio.run(get(app, "/a"))
        too_long = asyncio.run(get(app, "/a", headers={"X-Request-ID": "x" * (MAX_REQUEST_ID_CHARS + 1)}))
        spaced = asyncio.run(get(app, "/a", headers={"X-Request-ID": "a b"}))
    finally:
        log.close()
    ids = [r.headers["x-request-id"] for r in (plain, too_long, spaced)]
    assert len(set(ids)) == 3 and all(0 < len(i) <= MAX_REQUEST_ID_CHARS and " " not in i for i in ids)
    assert [r.request_id for r in router_of(client).requests] == ids


def test_the_proxys_own_answers_carry_a_request_id_and_count_as_errors(tmp_path: Path):
    app, _, buffer, log = recorded_app(tmp_path)
    try:
        missing = asyncio.run(get(app, "/nowhere", headers={"X-Request-ID": "r-404"}))
    finally:
        log.close()
    assert missing.status_code == 404 and missing.headers["x-request-id"] == "r-404"
    drained = buffer.drain()
    assert (m.HTTP_REQUESTS, ("", "GET", "", "404"), 1.0) in drained.counters
    assert (m.HTTP_ERRORS, ("", "404", "GET", ""), 1.0) in drained.counters
    assert " r-404 -- GET /nowhere 404 " in (tmp_path / "proxy.log").read_text()


def test_each_request_is_counted_timed_and_logged_with_its_route_app_and_status(tmp_path: Path):
    app, client, buffer, log = recorded_app(tmp_path)

    async def failing(request: Any) -> Any:
        yield text_reply("no", 503)

    async def scenario() -> None:
        for _ in range(3):
            await get(app, "/a/x")
        router_of(client).reply = failing
        await get(app, "/a/x", method="POST")

    try:
        asyncio.run(scenario())
    finally:
        log.close()
    drained = buffer.drain()
    counters = {(spec.name, tags): n for spec, tags, n in drained.counters}
    assert counters[("serve_num_http_requests", ("/a", "GET", "a", "200"))] == 3
    assert counters[("serve_num_http_requests", ("/a", "POST", "a", "503"))] == 1
    assert counters[("serve_num_http_error_requests", ("/a", "503", "POST", "a"))] == 1
    assert ("serve_num_http_error_requests", ("/a", "200", "GET", "a")) not in counters
    [(spec, tags, counts, _)] = [h for h in drained.histograms if h[1][3] == "200"]
    assert spec is m.HTTP_LATENCY and tags == ("GET", "/a", "a", "200") and sum(counts) == 3
    assert (m.HTTP_ONGOING, ("node-1", "10.0.0.1"), 0) in drained.gauges, "back to none in flight"
    lines = (tmp_path / "proxy.log").read_text().splitlines()
    assert len(lines) == 4 and all(" proxy 10.0.0.1 " in line for line in lines)
    assert lines[0].startswith("INFO ") and " -- GET /a 200 " in lines[0]
    assert lines[3].startswith("ERROR ") and " -- POST /a 503 " in lines[3]


def test_the_controllers_logging_config_turns_the_access_lines_to_json_filters_them_or_turns_them_off(tmp_path: Path):
    app, client, _, log = recorded_app(tmp_path)
    configure = client.longpoll.callbacks[LOGGING_KEY]

    async def failing(request: Any) -> Any:
        yield text_reply("no", 500)

    async def scenario() -> None:
        configure(LoggingConfig.parse({"encoding": "JSON"}))
        await get(app, "/a/x", headers={"X-Request-ID": "json-1"})
        configure(LoggingConfig.parse({"log_level": "WARNING"}))  # access lines are INFO, a failure's ERROR
        await get(app, "/a/x", headers={"X-Request-ID": "quiet-ok"})
        router_of(client).reply = failing
        await get(app, "/a/x", headers={"X-Request-ID": "loud-500"})
        configure(LoggingConfig.parse({"enable_access_log": False}))
        await get(app, "/a/x", headers={"X-Request-ID": "off"})
        configure(LoggingConfig.parse({"logs_dir": str(tmp_path / "elsewhere")}))
        await get(app, "/a/x", headers={"X-Request-ID": "moved"})
        configure(None)  # the feed closed: back to the defaults, in the same file as the defaults
        await get(app, "/a/x", headers={"X-Request-ID": "default"})

    try:
        asyncio.run(scenario())
    finally:
        log.close()
    first, *rest = (tmp_path / "proxy.log").read_text().splitlines()
    assert json.loads(first)["request_id"] == "json-1" and json.loads(first)["message"].startswith("GET /a 200 ")
    assert len(rest) == 2 and rest[0].startswith("ERROR ") and " loud-500 -- GET /a 500 " in rest[0]
    assert " default -- GET /a 500 " in rest[1]
    assert " moved -- GET /a 500 " in (tmp_path / "elsewhere" / "proxy.log").read_text()


def _socket_app(tmp_path: Path, close_code: int | None) -> tuple[ProxyApp, FakeClient, Recorded, ServeLog]:
    """The app accepts, then closes with ``close_code`` (None: it waits for its client to leave)."""
    app, client, buffer, log = recorded_app(tmp_path)
    router = router_of(client)

    async def reply(request: Any, messages: Any) -> Any:
        yield [{"type": "websocket.accept"}]
        if close_code is not None:
            yield [{"type": "websocket.close", "code": close_code}]
            return
        async for message in messages:
            if message["type"] == "websocket.disconnect":
                return

    router.stream = lambda request, body=None, **policy: (router.requests.append(request), reply(request, body))[1]
    return app, client, buffer, log


def test_a_websocket_is_counted_and_logged_as_ws_with_the_close_code_that_ended_it(tmp_path: Path):
    connect = {"type": "websocket.connect"}
    outcomes = {}
    for name, close_code, incoming in [
        ("clean", 1000, [connect]),
        ("broken", 1011, [connect]),
        ("client-left", None, [connect, {"type": "websocket.disconnect", "code": 1001}]),
        ("refused", None, [connect]),
    ]:
        app, client, buffer, log = _socket_app(tmp_path / name, close_code)
        path = "/nowhere" if name == "refused" else "/a/ws"
        try:
            run_websocket(app, {"type": "websocket", "path": path, "headers": [(b"x-request-id", name.encode())]},
                          incoming)
        finally:
            log.close()
        drained = buffer.drain()
        counters = {(spec.name, tags): n for spec, tags, n in drained.counters}
        [access_line] = (tmp_path / name / "proxy.log").read_text().splitlines()
        outcomes[name] = (counters, access_line)

    counters, line = outcomes["clean"]
    assert counters == {("serve_num_http_requests", ("/a", "WS", "a", "1000")): 1}
    assert line.startswith("INFO ") and " clean -- WS /a 1000 " in line
    counters, line = outcomes["broken"]
    assert counters[("serve_num_http_error_requests", ("/a", "1011", "WS", "a"))] == 1
    assert line.startswith("ERROR ") and " broken -- WS /a 1011 " in line
    counters, line = outcomes["client-left"]  # "going away": the client closed first, and well
    assert counters == {("serve_num_http_requests", ("/a", "WS", "a", "1001")): 1}
    assert " client-left -- WS /a 1001 " in line
    counters, line = outcomes["refused"]  # no route: the handshake is answered 403
    assert counters[("serve_num_http_error_requests", ("", "403", "WS", ""))] == 1
    assert line.startswith("INFO ") and " refused -- WS /nowhere 403 " in line


def test_waiting_for_a_logging_config_returns_once_the_proxy_has_it_and_false_after_the_timeout(tmp_path: Path):
    app, client, _, log = recorded_app(tmp_path)
    wanted = LoggingConfig.parse({"encoding": "JSON"})

    async def scenario() -> tuple[bool, bool, bool]:
        waiting = asyncio.ensure_future(app.wait_for_logging(wanted, timeout_s=5))
        await asyncio.sleep(0)
        before = waiting.done()
        client.longpoll.callbacks[LOGGING_KEY](wanted)
        applied = await waiting
        never = await app.wait_for_logging(LoggingConfig.parse({"log_level": "DEBUG"}), timeout_s=0.05)
        return before, applied, never

    try:
        assert asyncio.run(scenario()) == (False, True, False)
    finally:
        log.close()
