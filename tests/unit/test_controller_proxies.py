"""HTTP proxies: one per node, retried after a failed start, restarted after death, removed with their node."""

from __future__ import annotations

from fake_cluster import HEAD, WORKER, FakeCluster, Harness, quiesce, run, until

from serve_nb.config import HTTPOptions
from serve_nb.control.proxies import PROXY_RETRY_S
from serve_nb.types import ProxyStatus


def _statuses(h: Harness) -> dict[str, str]:
    return dict(h.published("status").proxies)


def test_a_proxy_starts_on_every_node_or_on_the_head_only():
    async def scenario():
        h = Harness(FakeCluster(nodes=[HEAD, WORKER]))
        await h.start(HTTPOptions())
        await until(lambda: _statuses(h) == {"head": "HEALTHY", "worker": "HEALTHY"}, "both proxies to serve")
        assert _statuses(h)["head"] is ProxyStatus.HEALTHY

        head_only = Harness(FakeCluster(nodes=[HEAD, WORKER]))
        await head_only.start(HTTPOptions(location="HeadOnly"))
        await until(lambda: _statuses(head_only) == {"head": "HEALTHY"}, "the head's proxy to serve")
        assert [p.node_id for p in head_only.cluster.proxies] == ["head"]

    run(scenario())


def test_a_proxy_that_cannot_start_is_unhealthy_and_retried():
    async def scenario():
        h = Harness()
        h.cluster.proxy_start_error = "[Errno 98] Address already in use"
        core = await h.start(HTTPOptions())
        await until(lambda: _statuses(h) == {"head": "UNHEALTHY"}, "the proxy to fail")
        assert "Address already in use" in (await core.get_status()).proxy_details["head"].message
        [failed] = h.cluster.proxies
        assert failed.killed
        await h.tick(PROXY_RETRY_S - 1)
        assert len(h.cluster.proxies) == 1, "not retried before PROXY_RETRY_S"

        h.cluster.proxy_start_error = None  # the port was freed
        await h.tick(1.0)
        await until(lambda: _statuses(h) == {"head": "HEALTHY"}, "the retry to succeed")
        assert len(h.cluster.proxies) == 2
        assert (await core.get_status()).proxy_details["head"].message == ""

    run(scenario())


def test_a_dead_proxy_is_restarted_and_a_gone_node_loses_its_proxy():
    async def scenario():
        h = Harness(FakeCluster(nodes=[HEAD, WORKER]))
        await h.start(HTTPOptions())
        await until(lambda: _statuses(h) == {"head": "HEALTHY", "worker": "HEALTHY"}, "both proxies to serve")
        by_node = {p.node_id: p for p in h.cluster.proxies}
        head_proxy, worker_proxy = by_node["head"], by_node["worker"]
        head_proxy.die()
        await h.tick()
        await until(lambda: len(h.cluster.proxies) == 3 and _statuses(h)["head"] == "HEALTHY", "a new head proxy")

        h.cluster.nodes.remove(WORKER)
        await h.tick()
        await until(lambda: set(_statuses(h)) == {"head"}, "the worker's proxy to go")
        assert worker_proxy.killed

    run(scenario())


def test_a_restarted_controller_adopts_serving_proxies():
    async def scenario():
        cluster = FakeCluster()
        first = Harness(cluster)
        await first.start(HTTPOptions())
        await until(lambda: _statuses(first) == {"head": "HEALTHY"}, "the proxy to serve")
        await first.crash()
        second = Harness(cluster, first.clock)
        core = await second.start(HTTPOptions())
        await quiesce()
        # Nothing was deployed, so there is no checkpoint: a controller without one adopts nothing.
        assert len(cluster.proxies) == 2

        await core.deploy_app("app", None, "Model", [])  # writes a checkpoint
        await second.crash()
        third = Harness(cluster, first.clock)
        await third.start(HTTPOptions())
        await quiesce()
        assert len(cluster.proxies) == 2, "the serving proxy was adopted, none started"
        assert _statuses(third) == {"head": "HEALTHY"}

    run(scenario())
