"""What replicas report about the requests they finished reaches ``serve.status()`` and the app widget's feed,
and slides out of it as time passes, with no new report."""

from __future__ import annotations

from fake_cluster import Harness, run, spec, until

from serve_nb.core.request_stats import RequestTally, TallySnapshot
from serve_nb.core.snapshots import STATUS_KEY, app_key


def tally(latency_ms: float, count: int, errors: int = 0) -> TallySnapshot:
    counter = RequestTally()
    for i in range(count):
        counter.add(latency_ms, i < errors)
    snapshot = counter.drain()
    assert snapshot is not None
    return snapshot


def published_requests(h: Harness):
    status = h.published(STATUS_KEY)
    return status.applications["app"].deployments["Model"].requests


def test_replicas_tallies_add_up_in_the_status_and_the_app_widget_and_decay_without_new_reports():
    async def scenario():
        h = Harness()
        core = await h.start()
        await core.deploy_app("app", "/app", "Model", [spec(num_replicas=2)])
        await h.wait_status("RUNNING")
        first, second = h.cluster.live()
        assert published_requests(h) is None, "a deployment that served nothing reads None"

        await core.record_replica_metrics("app", "Model", first.replica_id, 0, [], (), [], tally(8.0, 6, errors=1))
        await core.record_replica_metrics("app", "Model", second.replica_id, 0, [], (), [], tally(150.0, 4, errors=2))
        await h.tick(1.0)
        await until(lambda: published_requests(h) is not None, "the figures to be published")
        figures = published_requests(h)
        assert (figures.count, figures.errors, figures.error_rate) == (10, 3, 0.3)
        assert 5.0 <= figures.p50_ms <= 10.0 and 100.0 <= figures.p99_ms <= 200.0
        assert figures.requests_per_s > 0
        assert (await h.status()).deployments["Model"].requests == figures, "serve.status() says the same"
        await until(lambda: h.published(app_key("app")).deployments[0].requests == figures, "the app widget's copy")

        for _ in range(60):  # a minute with no report at all: the reconcile loop's publishes slide the window
            await h.tick(1.0)
        await until(lambda: published_requests(h) is None, "the figures to decay")
        await until(lambda: h.published(app_key("app")).deployments[0].requests is None, "the widget to go idle")

    run(scenario())


def test_a_report_without_requests_leaves_the_figures_alone():
    async def scenario():
        h = Harness()
        core = await h.start()
        await core.deploy_app("app", "/app", "Model", [spec()])
        await h.wait_status("RUNNING")
        [replica] = h.cluster.live()
        await core.record_replica_metrics("app", "Model", replica.replica_id, 1, ["hello"])  # an older replica's call
        await h.tick(1.0)
        assert published_requests(h) is None

    run(scenario())
