"""Benchmark serve_nb beside Ray Serve on this machine: same workloads, same Ray, fresh processes.

    python bench/run.py                 # both systems, alternating, 3 repetitions, medians + ratios
    python bench/run.py --reps 1 --quick --systems serve_nb   # a smoke run
    python bench/run.py --only arrays,batched                 # some workload groups only
    python bench/run.py --only nodes                          # replicas over 1, 2, 3 nodes of a local 3-node cluster

Each repetition runs every system in its own fresh Python process (``--worker``), alternating which goes
first; the workloads are in ``workloads.py``, ``model_workloads.py`` and ``nodes.py``. ``--only`` picks groups of them
(the first deploy always runs: it starts Serve); figures of groups not run are left out of the report.
Bare uvicorn + starlette is measured once, as the ceiling, when a group that is compared with it runs.
Results go to ``--out``: ``report.md`` (also printed), ``results.json`` (raw runs, medians, machine) and
``scaling.png`` (throughput vs replicas and concurrency, when the sweep ran).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from load import client_name, http_load, websocket_round_trips  # noqa: E402
from report import markdown, medians, metrics_cost, plot  # noqa: E402
from workloads import MB, groups  # noqa: E402

#: The workload groups whose figures the report sets beside bare uvicorn's.
BASELINE_GROUPS = frozenset({"http", "body", "websocket"})


def machine(reps: int) -> dict[str, Any]:
    import ray

    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "platform": platform.platform(terse=True),
        "http_client": client_name(),
        "reps": reps,
    }


def wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def measure_baseline(port: int, seconds: float, only: frozenset[str] | None, messages: int) -> dict[str, float]:
    """Bare uvicorn + starlette, loaded by the same clients as the systems, for the groups in ``only`` (all
    by default): the trivial reply at 32 connections (``http``), the 1 MB body echo at 8 (``body``), and
    ``messages`` WebSocket round trips (``websocket``)."""
    server = subprocess.Popen([sys.executable, str(HERE / "baseline.py"), str(port)])
    url = f"http://127.0.0.1:{port}/"
    figures: dict[str, float] = {}
    try:
        wait_for_port(port)
        http_load(url, 8, 1.0)
        if only is None or "http" in only:
            figures["baseline_rps_32"] = http_load(url, 32, seconds)["rps"]
        if only is None or "body" in only:
            figures["baseline_body_1mb_rps_8"] = http_load(url + "echo", 8, seconds, body_bytes=MB)["rps"]
        if only is None or "websocket" in only:
            rtt = websocket_round_trips(f"ws://127.0.0.1:{port}/ws/echo", messages)
            figures.update(baseline_ws_rtt_p50_ms_1=rtt["p50_ms"], baseline_ws_rtt_p99_ms_1=rtt["p99_ms"])
        return figures
    finally:
        server.terminate()
        server.wait(timeout=10)


#: serve_nb with its metrics off (``SERVE_NB_METRICS=0``), run on the groups whose figures show what metrics cost.
METRICS_OFF = "serve_nb_metrics_off"
METRICS_COST_GROUPS = frozenset({"http", "handle"})


def run_worker(system: str, quick: bool, port: int, only: str | None) -> dict[str, Any]:
    """One system, one fresh process; a failure is recorded (with its stderr tail), not fatal to the run."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "result.json"
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        if system == METRICS_OFF:
            system, env["SERVE_NB_METRICS"] = "serve_nb", "0"
        cmd = [sys.executable, __file__, "--worker", system, "--result-file", str(path), "--port", str(port)]
        cmd += ["--only", only] if only else []
        proc = subprocess.run(cmd + (["--quick"] if quick else []), env=env, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0 or not path.exists():
            print(proc.stderr[-3000:], file=sys.stderr)
            last_line = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return {"failed": f"exit {proc.returncode}: {last_line}"}
        return json.loads(path.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", default="serve_nb,ray_serve", help="comma-separated: serve_nb, ray_serve")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny counts and a small sweep (smoke test)")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--port", type=int, default=8000, help="HTTP port for the systems under test")
    parser.add_argument("--only", help="comma-separated workload groups (default: all): " + ", ".join(groups()))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    args = parser.parse_args()

    only = frozenset(g.strip() for g in args.only.split(",") if g.strip()) if args.only is not None else None
    if only is not None and (not only or only - set(groups())):
        parser.error(f"--only {args.only!r}: choose one or more of {', '.join(groups())}")
    if args.worker:
        from workloads import run_workloads

        results = run_workloads(args.worker, args.quick, args.port, only)
        Path(args.result_file).write_text(json.dumps(results))
        return 0

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - {"serve_nb", "ray_serve"}
    if unknown:
        parser.error(f"unknown system(s) {sorted(unknown)}: choose from serve_nb, ray_serve")
    info = machine(args.reps)
    if only is None or only & BASELINE_GROUPS:
        print("baseline: bare uvicorn + starlette ...", file=sys.stderr, flush=True)
        info.update(measure_baseline(args.port, 1.0 if args.quick else 5.0, only, 300 if args.quick else 3000))
    cost_groups = METRICS_COST_GROUPS if only is None else only & METRICS_COST_GROUPS
    measured = systems + ([METRICS_OFF] if "serve_nb" in systems and cost_groups else [])
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in measured}
    for rep in range(args.reps):
        for system in measured if rep % 2 == 0 else list(reversed(measured)):
            print(f"rep {rep + 1}/{args.reps}: {system} ...", file=sys.stderr, flush=True)
            groups_arg = ",".join(sorted(cost_groups)) if system == METRICS_OFF else args.only
            runs[system].append(run_worker(system, args.quick, args.port, groups_arg))

    med = {system: medians([r for r in results if "failed" not in r]) for system, results in runs.items()}
    text = markdown(med, systems, info) + metrics_cost(med, runs)
    failures = [f"{s} rep {i + 1}: {r['failed']}" for s, rs in runs.items() for i, r in enumerate(rs) if "failed" in r]
    if failures:
        text += "\n\nFailed runs (left out of the medians):\n" + "\n".join(f"- {f}" for f in failures)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"machine": info, "runs": runs, "medians": med}, indent=2))
    (out / "report.md").write_text(text + "\n")
    if plot(med, out / "scaling.png"):
        text += f"\n\nPlot: {out / 'scaling.png'}"
    print(text)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
