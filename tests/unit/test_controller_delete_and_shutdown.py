"""Deleting applications and shutting serve_nb down, on fake actors (no Ray)."""

from __future__ import annotations

import asyncio

from fake_cluster import WORKER, Harness, quiesce, run, spec, until

from serve_nb.config import HTTPOptions
from serve_nb.control.checkpoint import CHECKPOINT_KEY, decode
from serve_nb.core.snapshots import app_key


def test_deleting_an_app_drains_its_replicas_then_forgets_it():
    async def scenario():
        h = Harness()
        core = await h.start()
        await core.deploy_app("doomed", "/doomed", "Model", [spec(num_replicas=2)])
        await core.deploy_app("kept", "/kept", "Model", [spec()])
        await h.wait_status("RUNNING", app="doomed")
        doomed = h.cluster.live()[:2]
        await core.delete_apps(["doomed"])
        assert "/doomed" not in h.published("routes"), "the route goes at once"
        await until(lambda: all(r.killed for r in doomed), "the app's replicas to stop")
        assert all(r.drained for r in doomed), "each drained before it was killed"
        await until(lambda: "doomed" not in core._apps, "the app to be forgotten")
        await quiesce()
        assert "doomed" not in (await core.get_status()).applications
        assert h.published(app_key("doomed")) is None
        saved = decode(h.cluster.kv[CHECKPOINT_KEY])
        assert list(saved.apps) == ["kept"]
        assert len(h.cluster.live()) == 1

    run(scenario())


def test_shutdown_stops_replicas_and_proxies_and_deletes_the_checkpoint():
    async def scenario():
        h = Harness()
        h.cluster.nodes.append(WORKER)
        core = await h.start(HTTPOptions())
        await core.deploy_app("app", "/app", "Model", [spec(num_replicas=2)])
        await h.wait_status("RUNNING")
        proxies = list(h.cluster.proxies)
        assert len(proxies) == 2
        await core.shutdown()
        assert not h.cluster.live()
        assert all(r.drained for r in h.cluster.replicas)
        assert all(p.stopped and p.killed for p in proxies)
        assert CHECKPOINT_KEY not in h.cluster.kv
        assert h.published("status").applications == {} and h.published("status").proxies == {}
        error = await core.deploy_app("app", "/app", "Model", [spec()])
        assert error is not None and "shutting down" in error

    run(scenario())


def test_shutdown_kills_replicas_that_do_not_drain_in_time():
    async def scenario():
        h = Harness()
        core = await h.start()
        await core.deploy_app("app", "/app", "Model", [spec()])
        await h.wait_status("RUNNING")
        [stuck] = h.cluster.live()
        stuck.drains = False
        shutdown = asyncio.ensure_future(core.shutdown(timeout_s=30.0))
        await quiesce()
        assert not shutdown.done() and not stuck.killed, "it waits for the drain"
        h.clock.advance(30.0)
        await until(shutdown.done, "shutdown to finish after its deadline")
        assert stuck.killed and not stuck.drained
        assert CHECKPOINT_KEY not in h.cluster.kv

    run(scenario())
