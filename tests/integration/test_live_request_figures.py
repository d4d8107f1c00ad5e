"""Live request figures from real replicas: what they finish reaches ``serve.status()`` and the app widget through
the controller (requests/s, p50/p99, errors over the last minute), with no Prometheus in between."""

from __future__ import annotations

import asyncio

import pytest

import serve_nb as serve
from helpers import wait_until

REQUESTS, FAILING = 20, 5
SLEEP_MS = 30.0


@serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0.1})
class Flaky:
    """Takes about ``SLEEP_MS``; raises when asked to."""

    async def __call__(self, fail: bool) -> str:
        await asyncio.sleep(SLEEP_MS / 1000)
        if fail:
            raise ValueError("asked to fail")
        return "ok"


def test_status_and_the_app_widget_report_the_requests_replicas_served(serve_instance):
    from serve_nb.notebook.widgets import AppWidget

    handle = serve.run(Flaky.bind(), name="flaky", route_prefix=None)
    widget = AppWidget("flaky", handle)
    try:
        assert serve.status().applications["flaky"].deployments["Flaky"].requests is None, "nothing served yet"
        responses = [handle.remote(i < FAILING) for i in range(REQUESTS)]
        for i, response in enumerate(responses):
            if i < FAILING:
                with pytest.raises(Exception, match="asked to fail"):
                    response.result(timeout_s=30)
            else:
                assert response.result(timeout_s=30) == "ok"

        def figures():
            found = serve.status().applications["flaky"].deployments["Flaky"].requests
            return found if found is not None and found.count >= REQUESTS else None

        summary = wait_until(figures, timeout_s=20, interval_s=0.2, what="the replicas' reports in serve.status()")
        assert summary.count == REQUESTS
        assert (summary.errors, summary.error_rate) == (FAILING, FAILING / REQUESTS)
        assert summary.requests_per_s > 0 and 0 < summary.window_s <= 60
        # Every request slept 30 ms, so both estimates lie in the (20, 50] ms bucket or above it; a loaded
        # two-core machine may stretch some, never to seconds.
        assert 20.0 <= summary.p50_ms <= summary.p99_ms <= 2000.0

        # The widget follows on the feed's thread while this one waits, as it does while other cells run.
        shown = lambda: str(widget.data.get("deployments"))  # noqa: E731
        wait_until(lambda: "req/s" in shown() and "5 errors (25.0%)" in shown(),
                   timeout_s=10, what="the figures in the app widget")
    finally:
        widget.close()
