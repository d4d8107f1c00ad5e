"""Benchmark serve_nb beside Ray Serve on this machine: same workloads, same Ray, fresh processes.

    python bench/run.py                 # both systems, alternating, 3 repetitions, medians + ratios
    python bench/run.py --reps 1 --quick --systems serve_nb   # a smoke run

Each repetition runs every system in its own fresh Python process (``--worker``), alternating which
goes first. The workload code is shared: both systems have the same API, so it takes the ``serve``
module as a parameter. Results: a markdown table (stdout and ``bench/results/report.md``) and raw JSON.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
PORT = int(os.environ.get("BENCH_PORT", "8000"))
URL = f"http://127.0.0.1:{PORT}/"

# (key, label, unit, better) -- better: "lower" or "higher"
FIGURES = [
    ("first_deploy_s", "first deploy (Ray up, with HTTP)", "s", "lower"),
    ("handle_p50_ms", "handle p50, sequential", "ms", "lower"),
    ("handle_p99_ms", "handle p99, sequential", "ms", "lower"),
    ("handle_rps_100", "handle req/s, 100 in flight", "req/s", "higher"),
    ("http_rps_1", "HTTP req/s, 1 connection", "req/s", "higher"),
    ("http_p50_ms_1", "HTTP p50, 1 connection", "ms", "lower"),
    ("http_rps_32", "HTTP req/s, 32 connections", "req/s", "higher"),
    ("http_p50_ms_32", "HTTP p50, 32 connections", "ms", "lower"),
    ("http_p99_ms_32", "HTTP p99, 32 connections", "ms", "lower"),
    ("http_errors_32", "HTTP errors, 32 connections", "", "lower"),
    ("redeploy_unchanged_s", "redeploy, unchanged code", "s", "lower"),
    ("redeploy_changed_s", "redeploy, changed code", "s", "lower"),
    ("scale_1_to_2_s", "scale 1→2", "s", "lower"),
    ("delete_s", "delete", "s", "lower"),
]

APP_SOURCE = '''
@serve.deployment(max_ongoing_requests=100, ray_actor_options={{"num_cpus": 0.5}})
class Trivial:
    async def __call__(self, request=None):
        return "{reply}"
'''


def define_app(serve: Any, reply: str) -> Any:
    """A fresh class object each time, like a re-run notebook cell; ``reply`` changes the code."""
    namespace: dict[str, Any] = {"serve": serve, "__name__": "__main__"}
    exec(compile(APP_SOURCE.format(reply=reply), "<bench>", "exec"), namespace)
    return namespace["Trivial"]


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def parse_wrk(text: str) -> dict[str, float]:
    def ms(value: str) -> float:
        number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
        return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]

    out: dict[str, float] = {}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", text):
        out["rps"] = float(m.group(1))
    if m := re.search(r"\s50%\s+(\S+)", text):
        out["p50_ms"] = ms(m.group(1))
    if m := re.search(r"\s99%\s+(\S+)", text):
        out["p99_ms"] = ms(m.group(1))
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        errors += sum(int(g) for g in m.groups())
    out["errors"] = errors
    return out


def http_load(connections: int, seconds: float) -> dict[str, float]:
    if shutil.which("wrk"):
        text = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", URL],
            capture_output=True, text=True, check=True,
        ).stdout
        return parse_wrk(text)
    return python_http_load(connections, seconds)


def python_http_load(connections: int, seconds: float) -> dict[str, float]:
    """Fallback when wrk is missing (slower client: figures are a lower bound)."""
    import asyncio

    import httpx

    async def main() -> dict[str, float]:
        latencies: list[float] = []
        errors = 0
        deadline = time.perf_counter() + seconds
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=connections)) as client:
            async def worker() -> None:
                nonlocal errors
                while time.perf_counter() < deadline:
                    t = time.perf_counter()
                    r = await client.get(URL)
                    latencies.append(time.perf_counter() - t)
                    errors += r.status_code >= 400

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(connections)))
            elapsed = time.perf_counter() - start
        return {"rps": len(latencies) / elapsed, "p50_ms": percentile(latencies, 0.5) * 1e3,
                "p99_ms": percentile(latencies, 0.99) * 1e3, "errors": errors}

    return asyncio.run(main())


def run_workloads(system: str, quick: bool) -> dict[str, Any]:
    import ray

    serve = importlib.import_module("serve_nb" if system == "serve_nb" else "ray.serve")
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    calls = 300 if quick else 3000
    seconds = 1.0 if quick else 5.0
    results: dict[str, Any] = {}

    app = define_app(serve, "v1")

    def first_deploy() -> None:  # Serve's start-up counts: "first deploy with Ray up"
        serve.start(http_options={"host": "127.0.0.1", "port": PORT})
        serve.run(app.bind(), name="bench", route_prefix="/")

    results["first_deploy_s"] = timed(first_deploy)
    handle = serve.get_app_handle("bench")
    for _ in range(100):
        handle.remote().result()
    lat = []
    for _ in range(calls):
        t = time.perf_counter()
        handle.remote().result()
        lat.append(time.perf_counter() - t)
    results["handle_p50_ms"] = percentile(lat, 0.5) * 1e3
    results["handle_p99_ms"] = percentile(lat, 0.99) * 1e3
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        responses = [handle.remote() for _ in range(100)]
        for r in responses:
            r.result()
        done += 100
    results["handle_rps_100"] = done / (time.perf_counter() - start)

    for conns in (1, 32):
        load = http_load(conns, seconds)
        results[f"http_rps_{conns}"] = load.get("rps")
        results[f"http_p50_ms_{conns}"] = load.get("p50_ms")
        results[f"http_p99_ms_{conns}"] = load.get("p99_ms")
        results[f"http_errors_{conns}"] = load.get("errors")
    results["http_client"] = "wrk" if shutil.which("wrk") else "python (httpx) fallback"

    results["redeploy_unchanged_s"] = timed(lambda: serve.run(define_app(serve, "v1").bind(), name="bench", route_prefix="/"))
    results["redeploy_changed_s"] = timed(lambda: serve.run(define_app(serve, "v2").bind(), name="bench", route_prefix="/"))
    assert handle.remote().result() == "v2"
    results["scale_1_to_2_s"] = timed(
        lambda: serve.run(define_app(serve, "v2").options(num_replicas=2).bind(), name="bench", route_prefix="/")
    )
    results["delete_s"] = timed(lambda: serve.delete("bench"))
    serve.shutdown()
    ray.shutdown()
    return results


def machine() -> dict[str, Any]:
    import ray

    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "platform": platform.platform(),
        "wrk": bool(shutil.which("wrk")),
    }


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def fmt(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def report(medians: dict[str, dict[str, float | None]], systems: list[str], info: dict[str, Any]) -> str:
    lines = [f"Machine: {info['cores']} cores, Python {info['python']}, Ray {info['ray']}; HTTP load: "
             f"{'wrk' if info['wrk'] else 'Python fallback (no wrk)'}.", ""]
    header = "| figure | " + " | ".join(systems) + (" | serve_nb / Ray Serve |" if len(systems) == 2 else " |")
    lines += [header, "|" + "---|" * (len(systems) + 1 + (len(systems) == 2))]
    for key, label, unit, _ in FIGURES:
        cells = [fmt(medians[s].get(key)) for s in systems]
        row = f"| {label}{f' ({unit})' if unit else ''} | " + " | ".join(cells)
        if len(systems) == 2:
            row += f" | {ratio(medians['serve_nb'].get(key), medians['ray_serve'].get(key))}"
        lines.append(row + " |")
    if medians.get("serve_nb", {}).get("http_rps_32"):
        lines += ["", f"serve_nb HTTP at 32 connections is {medians['serve_nb']['http_rps_32'] / 27000:.0%} of "
                  "bare uvicorn + starlette in one process (≈ 27,000 req/s here)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", default="serve_nb,ray_serve")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny counts (smoke test)")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--port", type=int, default=PORT, help="HTTP port for the systems under test")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        Path(args.result_file).write_text(json.dumps(run_workloads(args.worker, args.quick)))
        return

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    for rep in range(args.reps):
        order = systems if rep % 2 == 0 else list(reversed(systems))
        for system in order:
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
                path = tmp.name
            cmd = [sys.executable, __file__, "--worker", system, "--result-file", path] + (["--quick"] if args.quick else [])
            env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
            env["BENCH_PORT"] = str(args.port)
            print(f"rep {rep + 1}/{args.reps}: {system} ...", file=sys.stderr, flush=True)
            subprocess.run(cmd, check=True, env=env)
            runs[system].append(json.loads(Path(path).read_text()))
            os.unlink(path)

    medians: dict[str, dict[str, float | None]] = {}
    for system, results in runs.items():
        medians[system] = {}
        for key, *_ in FIGURES:
            values = [r[key] for r in results if isinstance(r.get(key), (int, float))]
            medians[system][key] = statistics.median(values) if values else None
    info = machine()
    text = report(medians, systems, info)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"machine": info, "runs": runs, "medians": medians}, indent=2))
    (out / "report.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
