"""The proxy's ASGI app in-process (no Ray): built-in endpoints, 404s and route matching."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from serve_nb.config import HTTPOptions
from serve_nb.core.snapshots import ROUTES_KEY
from serve_nb.data.http.proxy import ProxyApp


class FakeLongPoll:
    def __init__(self):
        self.callbacks = {}

    def subscribe(self, key, callback):
        self.callbacks[key] = callback


class FakeRouter:
    def __init__(self, target):
        self.target = target
        self.calls = []

    async def stream(self, method, args, kwargs, meta):
        scope, body, debug = args
        self.calls.append((scope["path"], scope["root_path"], body))
        yield (200, [(b"content-type", b"text/plain")], f"{self.target}:{scope['path']}".encode(), False)


class FakeClient:
    def __init__(self):
        self.longpoll = FakeLongPoll()
        self.routers = {}

    def router(self, dep):
        return self.routers.setdefault(dep, FakeRouter(f"{dep.app}/{dep.name}"))


def run(coro):
    return asyncio.run(coro)


async def get(app, path, **kw):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(kw.pop("method", "GET"), path, **kw)


def make_app():
    client = FakeClient()
    return ProxyApp(client, HTTPOptions()), client


def test_healthz_is_503_until_routes_arrive_then_200():
    async def scenario():
        app, client = make_app()
        before = await get(app, "/-/healthz")
        client.longpoll.callbacks[ROUTES_KEY]({"/a": ("app-a", "Ingress")})
        after = await get(app, "/-/healthz")
        return before, after

    before, after = run(scenario())
    assert before.status_code == 503
    assert (after.status_code, after.text) == (200, "success")


def test_routes_endpoint_and_longest_prefix_forwarding():
    async def scenario():
        app, client = make_app()
        client.longpoll.callbacks[ROUTES_KEY]({"/": ("root", "R"), "/a": ("a", "A"), "/a/b": ("ab", "AB")})
        routes = await get(app, "/-/routes")
        hits = [await get(app, p, method="POST", content=b"body") for p in ("/a/b/c", "/a", "/ab", "/")]
        return routes, hits, client

    routes, hits, client = run(scenario())
    assert routes.json() == {"/": "root", "/a": "a", "/a/b": "ab"}
    assert [h.text for h in hits] == ["ab/AB:/a/b/c", "a/A:/a", "root/R:/ab", "root/R:/"]
    calls = {dep.app: r.calls for dep, r in client.routers.items()}
    assert calls["ab"] == [("/a/b/c", "/a/b", b"body")]
    assert calls["root"][0][1] == ""  # the root prefix gives an empty root_path


def test_unknown_path_404_names_the_routes_endpoint():
    async def scenario():
        app, client = make_app()
        client.longpoll.callbacks[ROUTES_KEY]({"/a": ("a", "A")})
        return await get(app, "/zzz"), await get(app, "/-/nothing")

    missing, builtin_missing = run(scenario())
    assert missing.status_code == 404 and "/-/routes" in missing.text
    assert builtin_missing.status_code == 404


@pytest.mark.parametrize("prefix", ["/svc"])
def test_root_path_includes_configured_base(prefix):
    async def scenario():
        client = FakeClient()
        app = ProxyApp(client, HTTPOptions(root_path="/base"))
        client.longpoll.callbacks[ROUTES_KEY]({prefix: ("svc", "S")})
        await get(app, f"{prefix}/x")
        return client

    client = run(scenario())
    (router,) = client.routers.values()
    assert router.calls[0][1] == "/base/svc"
