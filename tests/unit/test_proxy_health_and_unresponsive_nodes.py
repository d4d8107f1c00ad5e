"""Proxies are health-checked like replicas: a frozen node's proxy turns UNHEALTHY at once, new replicas
are kept off that node, it turns HEALTHY when it answers again; and the addresses and retries the status
shows (fake actors, no Ray)."""

from __future__ import annotations

import dataclasses

from fake_cluster import HEAD, WORKER, FakeCluster, Harness, quiesce, run, spec, until

from serve_nb.config import HTTPOptions
from serve_nb.control.proxies import PROXY_HEALTH_PERIOD_S
from serve_nb.core.cluster_nodes import PROXY_RETRY_S
from serve_nb.exceptions import port_in_use_message
from serve_nb.types import DeploymentID

HEAD_AT = dataclasses.replace(HEAD, ip="10.0.0.1")
WORKER_AT = dataclasses.replace(WORKER, ip="10.0.0.2")


def _statuses(h: Harness) -> dict[str, str]:
    return dict(h.published("status").proxies)


def test_a_frozen_nodes_proxy_is_unhealthy_within_a_check_and_healthy_when_it_answers_again():
    async def scenario():
        h = Harness(FakeCluster(nodes=[HEAD_AT, WORKER_AT]))
        core = await h.start(HTTPOptions())
        await until(lambda: _statuses(h) == {"head": "HEALTHY", "worker": "HEALTHY"}, "both proxies to serve")
        worker_proxy = next(p for p in h.cluster.proxies if p.node_id == "worker")
        await quiesce()  # the health loops are waiting for their first period
        worker_proxy.frozen = True
        await h.tick(PROXY_HEALTH_PERIOD_S)
        await until(lambda: _statuses(h)["worker"] == "UNHEALTHY", "the frozen node's proxy to be unhealthy")
        detail = (await core.get_status()).proxy_details["worker"]
        assert "Not answering health checks (timed out)" in detail.message
        assert not worker_proxy.killed, "a frozen proxy is left alone: it serves again once its node thaws"

        worker_proxy.frozen = False
        await h.tick(PROXY_HEALTH_PERIOD_S)
        await until(lambda: _statuses(h)["worker"] == "HEALTHY", "the thawed proxy to be healthy again")
        assert len(h.cluster.proxies) == 2

    run(scenario())


def test_a_proxy_that_answers_but_no_longer_serves_is_restarted():
    async def scenario():
        h = Harness()
        await h.start(HTTPOptions())
        await until(lambda: _statuses(h) == {"head": "HEALTHY"}, "the proxy to serve")
        [first] = h.cluster.proxies
        await quiesce()
        first.serving = False
        await h.tick(PROXY_HEALTH_PERIOD_S)
        await until(lambda: len(h.cluster.proxies) == 2 and _statuses(h) == {"head": "HEALTHY"}, "a new proxy")
        assert first.killed

    run(scenario())


def test_new_replicas_are_kept_off_a_node_whose_proxy_does_not_answer():
    async def scenario():
        h = Harness(FakeCluster(nodes=[HEAD_AT, WORKER_AT]))
        core = await h.start(HTTPOptions())
        await until(lambda: _statuses(h) == {"head": "HEALTHY", "worker": "HEALTHY"}, "both proxies to serve")
        await core.deploy_app("app", "/app", "Model", [spec(num_replicas=1)])
        await h.wait_status("RUNNING")
        assert h.cluster.live()[0].info.node_id == "head", "no unresponsive node: Ray places it (fake: head)"

        next(p for p in h.cluster.proxies if p.node_id == "head").frozen = True
        await h.tick(PROXY_HEALTH_PERIOD_S)
        await until(lambda: _statuses(h)["head"] == "UNHEALTHY", "the head's proxy to be unhealthy")
        await core.scale_deployment("app", "Model", 2)
        await until(lambda: len(h.cluster.live()) == 2, "a second replica")
        assert h.cluster.live()[1].info.node_id == "worker", "placed on the node that answers"

    run(scenario())


def test_replicas_whose_checks_time_out_mark_their_node_unresponsive():
    async def scenario():
        h = Harness(FakeCluster(nodes=[HEAD_AT, WORKER_AT]))
        core = await h.start()
        await core.deploy_app("app", "/app", "Model", [spec(num_replicas=1, health_check_period_s=1.0)])
        await h.wait_status("RUNNING")
        [frozen] = h.cluster.live()
        frozen.frozen = True
        await h.tick(1.0)
        state = core._deployment(DeploymentID("app", "Model"))
        await until(lambda: state.unresponsive_nodes() == {"head"}, "the frozen replica's node to be unresponsive")
        frozen.frozen = False
        await h.tick(1.0)
        await until(lambda: state.unresponsive_nodes() == set(), "the node to answer again")

    run(scenario())


def test_proxies_on_every_interface_are_reported_at_their_nodes_addresses():
    async def scenario():
        h = Harness(FakeCluster(nodes=[HEAD_AT, WORKER_AT]))
        core = await h.start(HTTPOptions(host="0.0.0.0", port=8123))
        await until(lambda: _statuses(h) == {"head": "HEALTHY", "worker": "HEALTHY"}, "both proxies to serve")
        details = (await core.get_status()).proxy_details
        assert {n: d.address for n, d in details.items()} == {"head": "10.0.0.1:8123", "worker": "10.0.0.2:8123"}
        await core.deploy_app("app", "/app", "Model", [spec()])
        await h.wait_status("RUNNING")
        assert h.published("app:app").http_address == "10.0.0.1:8123"

    run(scenario())


def test_a_port_held_by_a_proxy_of_another_node_on_the_same_machine_is_named_and_retries_slow_down():
    async def scenario():
        same_machine = dataclasses.replace(WORKER, ip="10.0.0.1")
        h = Harness(FakeCluster(nodes=[HEAD_AT]))
        options = HTTPOptions(reuse_port=False)
        core = await h.start(options)
        await until(lambda: _statuses(h) == {"head": "HEALTHY"}, "the head's proxy to serve")
        h.cluster.proxy_start_error = port_in_use_message(options.host, options.port)
        h.cluster.nodes.append(same_machine)
        await h.tick()
        await until(lambda: _statuses(h).get("worker") == "UNHEALTHY", "the second proxy to fail")
        message = (await core.get_status()).proxy_details["worker"].message
        assert "held by this Serve's own HTTP proxy on node head" in message
        assert "8001" not in message and "next try in 5 s" in message
        await h.tick(PROXY_RETRY_S)
        await until(lambda: len(h.cluster.proxies) == 3, "a retry")
        await until(lambda: "next try in 10 s" in h.published("status").proxy_details["worker"].message,
                    "the next retry to wait longer")

    run(scenario())


def test_a_proxy_death_makes_the_controller_read_the_node_list_afresh():
    async def scenario():
        h = Harness(FakeCluster(nodes=[HEAD, WORKER]))
        await h.start(HTTPOptions())
        await until(lambda: _statuses(h) == {"head": "HEALTHY", "worker": "HEALTHY"}, "both proxies to serve")
        before = h.cluster.node_refreshes
        next(p for p in h.cluster.proxies if p.node_id == "worker").die()
        await until(lambda: h.cluster.node_refreshes == before + 1, "a fresh node list")

    run(scenario())


def test_replicas_on_a_node_whose_proxy_stops_answering_are_checked_at_once_and_replaced_elsewhere():
    async def scenario():
        h = Harness(FakeCluster(nodes=[HEAD_AT, WORKER_AT]))
        core = await h.start(HTTPOptions())
        await until(lambda: _statuses(h) == {"head": "HEALTHY", "worker": "HEALTHY"}, "both proxies to serve")
        await core.deploy_app("app", "/app", "Model", [spec(num_replicas=1, health_check_period_s=600.0)])
        await h.wait_status("RUNNING")
        [stuck] = h.cluster.live()
        assert stuck.info.node_id == "head"
        await quiesce()
        stuck.frozen = True
        next(p for p in h.cluster.proxies if p.node_id == "head").frozen = True
        await h.tick(PROXY_HEALTH_PERIOD_S)
        await until(lambda: stuck.killed, "the frozen node's replica to be dropped, long before its own next check")
        await until(lambda: len(h.cluster.live()) == 1, "a replacement")
        assert h.cluster.live()[0].info.node_id == "worker"

    run(scenario())


def test_a_node_ray_declares_dead_is_dropped_at_once_its_replicas_replaced_and_no_proxy_started_there():
    async def scenario():
        h = Harness(FakeCluster(nodes=[HEAD_AT, WORKER_AT], replica_node="worker"))
        core = await h.start(HTTPOptions())
        await until(lambda: _statuses(h) == {"head": "HEALTHY", "worker": "HEALTHY"}, "both proxies to serve")
        await core.deploy_app("app", "/app", "Model", [spec(num_replicas=2)])
        await h.wait_status("RUNNING")
        lost = h.cluster.live()
        assert [r.info.node_id for r in lost] == ["worker", "worker"]

        h.cluster.replica_node = "head"
        h.cluster.node_died("worker")  # no time passes: no health check or cache expiry can be what acts
        await until(lambda: [r.info.node_id for r in h.cluster.live()] == ["head", "head"],
                    "both replicas replaced on the head")
        assert all(r.killed for r in lost)
        await h.wait_status("RUNNING")
        assert _statuses(h) == {"head": "HEALTHY"}
        assert sorted(p.node_id for p in h.cluster.proxies) == ["head", "worker"], "no proxy started on the dead node"
        assert next(p for p in h.cluster.proxies if p.node_id == "worker").killed

    run(scenario())
