"""The benchmark runs end to end with tiny counts (so it cannot rot); no timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_runs_with_tiny_counts(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--reps", "1", "--systems", "serve_nb",
         "--port", "8410", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    run = results["runs"]["serve_nb"][0]
    for key in ("first_deploy_s", "handle_p50_ms", "handle_rps_100", "http_rps_32", "http_p50_ms_1",
                "compose_rps_32", "body_1mb_rps_8", "ws_rtt_p50_ms_1", "cold_start_s", "redeploy_changed_s", "scale_1_to_4_s",
                "delete_s", "rss_controller_mb", "rss_proxy_mb", "rss_replica_mb",
                "array_compose_1mb_ms", "array_compose_10mb_ms", "array_compose_50mb_ms",
                "array_driver_10mb_ms", "array_driver_50mb_ms",
                "batched_rps_64", "batched_p50_ms_64", "batched_p99_ms_64", "batched_mean_batch_64",
                "nodes_1_rps_100", "nodes_2_rps_100", "nodes_3_rps_100", "nodes_3_local_pct_8"):
        assert isinstance(run[key], (int, float)) and run[key] > 0, key
    assert run["http_errors_total"] == 0
    assert set(run["sweep"]) == {"1x1", "1x32", "2x1", "2x32"}
    machine = results["machine"]
    assert machine["ray"] and machine["baseline_rps_32"] > 0 and machine["baseline_body_1mb_rps_8"] > 0
    assert machine["baseline_ws_rtt_p50_ms_1"] > 0
    report = (tmp_path / "report.md").read_text()
    assert "| handle p50, sequential (ms) |" in report
    assert "| @serve.batch model over HTTP, req/s at 64 conns (req/s) |" in report
    assert "echoing the 1 MB body" in report  # the body's ceiling line
    assert "echoing the WebSocket frame" in report  # the WebSocket's
    assert "| 2 | 32 |" in report  # the sweep table
    assert "| handle req/s, 100 in flight, 3 replicas on 3 nodes of 3 (req/s) |" in report
    assert (tmp_path / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    off = results["runs"]["serve_nb_metrics_off"][0]  # the metrics' cost: the same groups with metrics off
    assert off["http_rps_32"] > 0 and off["handle_rps_100"] > 0 and "body_1mb_rps_8" not in off
    assert "Metrics cost (serve_nb with metrics on" in report and "- HTTP req/s at 32 connections: on " in report
