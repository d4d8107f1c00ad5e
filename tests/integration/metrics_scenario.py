"""A Ray of its own: Ray Serve's counters reach the metrics export port with their labels and exact values.
Run by test_access_logs_and_metrics.py in a child process (what the session's Ray exports depends on every test before,
and exact counts need a clean slate); prints "metrics scenario passed", or fails saying what differs."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import wait_until  # noqa: E402
from test_access_logs_and_metrics import composed_app, scrape, total  # noqa: E402

PORT = 8431

EXPECTED = [  # (metric, labels, value): each process exports on its own second, so wait for them all
    ("ray_serve_num_http_requests_total", {"route": "/obs", "method": "GET", "status_code": "200"}, 5),
    ("ray_serve_num_http_requests_total", {"status_code": "500"}, 2),
    ("ray_serve_num_http_error_requests_total", {"error_code": "500", "method": "GET", "route": "/obs"}, 2),
    ("ray_serve_http_request_latency_ms_count", {"route": "/obs"}, 7),
    ("ray_serve_http_request_latency_ms_bucket", {"le": "+Inf"}, 7),
    ("ray_serve_deployment_request_counter_total", {"deployment": "Front", "route": "/obs"}, 7),
    ("ray_serve_deployment_request_counter_total", {"deployment": "Model", "route": "/obs"}, 7),
    ("ray_serve_deployment_error_counter_total", {"deployment": "Model", "exception_type": "ValueError"}, 2),
    ("ray_serve_deployment_processing_latency_ms_count", {"deployment": "Model"}, 7),
    ("ray_serve_num_router_requests_total", {"deployment": "Model", "route": "/obs"}, 7),
    ("ray_serve_num_router_requests_total", {"deployment": "Front", "route": "/obs"}, 7),
    ("ray_serve_deployment_replica_starts_total", {"deployment": "Model"}, 1),
    ("ray_serve_deployment_replica_healthy", {"deployment": "Model"}, 1),
]


def get(path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=30) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def check() -> None:
    import serve_nb as serve

    serve.start(http_options={"port": PORT})
    serve.run(composed_app(serve), name="obs", route_prefix="/obs")
    assert [get("/obs?x=2") for _ in range(5)] == [200] * 5
    assert [get("/obs?x=-1") for _ in range(2)] == [500] * 2
    assert get("/obs-missing") == 404
    last: list = []

    def all_there() -> bool:
        samples = scrape()
        last[:] = [(name, labels, want, got) for name, labels, want in EXPECTED
                   if (got := total(samples, name, application="obs", **labels)) != want]
        return not last

    try:
        wait_until(all_there, timeout_s=90, interval_s=0.5, what="every expected figure on the metrics port")
    except AssertionError:
        raise AssertionError(f"still not as expected (metric, labels, wanted, got): {last}") from None
    samples = scrape()
    assert total(samples, "ray_serve_num_http_error_requests_total", error_code="404") >= 1
    replica_labels = [ls for n, ls, _ in samples if n == "ray_serve_deployment_request_counter_total"
                      and ls.get("deployment") == "Model"]
    assert replica_labels and all(ls["replica"] for ls in replica_labels)
    serve.shutdown()


def main() -> None:
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        check()
    finally:
        ray.shutdown()
    print("metrics scenario passed")


if __name__ == "__main__":
    main()
