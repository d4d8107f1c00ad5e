"""The workloads, run against one serving system in one fresh process.

Both systems share one API, so every workload takes the ``serve`` module as a parameter and the user code
below is the same for both: only the import differs, exactly as for a user switching between them.
"""

from __future__ import annotations

import time
import urllib.request
from typing import Any, Callable

from load import client_name, http_load, percentile

TRIVIAL = '''
@serve.deployment(max_ongoing_requests=100, ray_actor_options={{"num_cpus": 0.5}})
class Trivial:
    async def __call__(self, request=None):
        return "{reply}"
'''

OTHERS = '''
@serve.deployment(max_ongoing_requests=100, ray_actor_options={"num_cpus": 0.5})
class Upper:
    def __call__(self, text):
        return text.upper()


@serve.deployment(max_ongoing_requests=100, ray_actor_options={"num_cpus": 0.5})
class Front:
    def __init__(self, upper):
        self.upper = upper

    async def __call__(self, request):
        return await self.upper.remote("composed")


@serve.deployment(max_ongoing_requests=100, ray_actor_options={"num_cpus": 0.5})
class Echo:
    async def __call__(self, request):
        return str(len(await request.body()))


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5},
    autoscaling_config={"min_replicas": 0, "initial_replicas": 0, "max_replicas": 1, "target_ongoing_requests": 1},
)
class Cold:
    async def __call__(self, request=None):
        return "warm"
'''

MB = 1024 * 1024


def define(serve: Any, source: str) -> dict[str, Any]:
    """Fresh class objects each time, like a re-run notebook cell."""
    namespace: dict[str, Any] = {"serve": serve, "__name__": "__main__"}
    exec(compile(source, "<bench>", "exec"), namespace)
    return namespace


def trivial(serve: Any, reply: str = "v1") -> Any:
    return define(serve, TRIVIAL.format(reply=reply))["Trivial"]


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def get(url: str, body: bytes | None = None, timeout: float = 120) -> str:
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=timeout) as r:
        return r.read().decode()


def _rss_mb(_actor: Any) -> float:
    """Runs inside an actor (``__ray_call__``): that worker process's resident memory."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory_mb(app_name: str) -> dict[str, float | None]:
    """RSS of the controller, the (one) proxy and one replica of ``app_name``, found by actor name.

    Both systems name these actors: ``*CONTROLLER*``, ``*PROXY*`` and ``*REPLICA::<app>#...``.
    """
    import ray

    found: dict[str, tuple[str, str]] = {}
    for actor in ray.util.list_named_actors(all_namespaces=True):
        name, namespace = actor["name"], actor["namespace"]
        upper = name.upper()
        if "CONTROLLER" in upper:
            found.setdefault("controller", (name, namespace))
        elif "PROXY" in upper:
            found.setdefault("proxy", (name, namespace))
        elif f"REPLICA::{app_name.upper()}#" in upper:
            found.setdefault("replica", (name, namespace))
    out: dict[str, float | None] = {}
    for role in ("controller", "proxy", "replica"):
        if role in found:
            actor = ray.get_actor(found[role][0], namespace=found[role][1])
            out[f"rss_{role}_mb"] = ray.get(actor.__ray_call__.remote(_rss_mb), timeout=30)
        else:
            out[f"rss_{role}_mb"] = None
    return out


def run_workloads(system: str, quick: bool, port: int) -> dict[str, Any]:
    """Every figure for one system; the caller runs this in a fresh process with a fresh local Ray."""
    import importlib

    import ray

    serve = importlib.import_module("serve_nb" if system == "serve_nb" else "ray.serve")
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    url = f"http://127.0.0.1:{port}/"
    calls, seconds = (300, 1.0) if quick else (3000, 5.0)
    replica_counts, concurrencies = ((1, 2), (1, 32)) if quick else ((1, 2, 4), (1, 8, 32, 128))
    results: dict[str, Any] = {"http_client": client_name()}
    errors = 0

    def run(app: Any, name: str = "bench", route_prefix: str | None = "/") -> None:
        serve.run(app, name=name, route_prefix=route_prefix)

    # -- control plane, first: the proxy and the controller start here too ("first deploy with Ray up")
    def first_deploy() -> None:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        run(trivial(serve).bind())

    results["first_deploy_s"] = timed(first_deploy)

    # -- handle path
    handle = serve.get_app_handle("bench")
    for _ in range(100):
        handle.remote().result()
    latencies = []
    for _ in range(calls):
        start = time.perf_counter()
        handle.remote().result()
        latencies.append(time.perf_counter() - start)
    results["handle_p50_ms"] = percentile(latencies, 0.5) * 1e3
    results["handle_p99_ms"] = percentile(latencies, 0.99) * 1e3
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for response in [handle.remote() for _ in range(100)]:
            response.result()
        done += 100
    results["handle_rps_100"] = done / (time.perf_counter() - start)

    # -- HTTP: throughput vs replicas and vs concurrency; the 1-replica row gives the headline figures
    sweep: dict[str, dict[str, float]] = {}
    for replicas in replica_counts:
        run(trivial(serve).options(num_replicas=replicas).bind())
        http_load(url, 8, 1.0)  # warm-up: connections, routing tables, every replica reached
        for conns in concurrencies:
            load = http_load(url, conns, seconds)
            errors += int(load["errors"])
            sweep[f"{replicas}x{conns}"] = load
    results["sweep"] = sweep
    for conns in (1, 32):
        load = sweep[f"1x{conns}"]
        results[f"http_rps_{conns}"] = load.get("rps")
        results[f"http_p50_ms_{conns}"] = load.get("p50_ms")
        results[f"http_p99_ms_{conns}"] = load.get("p99_ms")
        results[f"http_errors_{conns}"] = load.get("errors")
    run(trivial(serve).bind())  # back to one replica
    results.update(memory_mb("bench"))

    # -- a 2-deployment composition over HTTP, a 1 MB body, a cold start from zero replicas
    others = define(serve, OTHERS)
    run(others["Front"].bind(others["Upper"].bind()), name="compose", route_prefix="/compose")
    assert get(url + "compose") == "COMPOSED"
    load = http_load(url + "compose", 32, seconds)
    errors += int(load["errors"])
    results.update(compose_rps_32=load["rps"], compose_p50_ms_32=load["p50_ms"], compose_p99_ms_32=load["p99_ms"])

    run(others["Echo"].bind(), name="echo", route_prefix="/echo")
    assert get(url + "echo", b"x" * MB) == str(MB)
    load = http_load(url + "echo", 8, seconds, body_bytes=MB)
    errors += int(load["errors"])
    results.update(body_1mb_rps_8=load["rps"], body_1mb_p50_ms_8=load["p50_ms"])

    run(others["Cold"].bind(), name="cold", route_prefix="/cold")
    cold: list[str] = []
    results["cold_start_s"] = timed(lambda: cold.append(get(url + "cold")))
    assert cold == ["warm"]
    for name in ("compose", "echo", "cold"):
        serve.delete(name)

    # -- control plane on the 1-replica app
    results["redeploy_unchanged_s"] = timed(lambda: run(trivial(serve).bind()))
    results["redeploy_changed_s"] = timed(lambda: run(trivial(serve, "v2").bind()))
    assert handle.remote().result() == "v2"
    results["scale_1_to_2_s"] = timed(lambda: run(trivial(serve, "v2").options(num_replicas=2).bind()))
    run(trivial(serve, "v2").bind())
    results["scale_1_to_4_s"] = timed(lambda: run(trivial(serve, "v2").options(num_replicas=4).bind()))
    results["delete_s"] = timed(lambda: serve.delete("bench"))
    results["http_errors_total"] = errors
    serve.shutdown()
    ray.shutdown()
    return results
