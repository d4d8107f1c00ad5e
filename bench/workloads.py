"""The workloads, run against one serving system in one fresh process.

Both systems share one API, so every workload takes the ``serve`` module as a parameter and the user code
below is the same for both: only the import differs, exactly as for a user switching between them.
"""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

from load import client_name, http_load, percentile, websocket_round_trips

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

# A Starlette app rather than FastAPI's ``@app.websocket``: Ray Serve 2.60 with this FastAPI (0.165) answers
# every FastAPI WebSocket route with 403 (its replica's app closes the socket as if no route matched), while
# Starlette's WebSocketRoute works in both systems.
WEBSOCKET = '''
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute


async def ws_echo(websocket):
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        await websocket.send({**message, "type": "websocket.send"})


@serve.deployment(max_ongoing_requests=100, ray_actor_options={"num_cpus": 0.5})
@serve.ingress(Starlette(routes=[WebSocketRoute("/echo", ws_echo)]))
class WsEcho:
    pass
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


@dataclass
class Bench:
    """What every workload group shares in one system's process: the API, the counts, what was measured."""

    serve: Any
    quick: bool
    port: int
    results: dict[str, Any] = field(default_factory=dict)
    errors: int = 0  # HTTP errors over every load, reported once as ``http_errors_total``

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def calls(self) -> int:
        return 300 if self.quick else 3000

    @property
    def seconds(self) -> float:
        return 1.0 if self.quick else 5.0

    def run(self, app: Any, name: str = "bench", route_prefix: str | None = "/") -> None:
        self.serve.run(app, name=name, route_prefix=route_prefix)

    def load(self, url: str, connections: int, body_bytes: int = 0) -> dict[str, float]:
        """One ``http_load`` of ``seconds``, its errors counted towards the total."""
        load = http_load(url, connections, self.seconds, body_bytes=body_bytes)
        self.errors += int(load["errors"])
        return load


def first_deploy(b: Bench) -> None:
    """Always first: it starts the controller and the proxy, and the trivial "bench" app others use."""

    def deploy() -> None:
        b.serve.start(http_options={"host": "127.0.0.1", "port": b.port})
        b.run(trivial(b.serve).bind())

    b.results["first_deploy_s"] = timed(deploy)


def handle_path(b: Bench) -> None:
    """Sequential latency, then throughput with 100 calls in flight, through a handle from the driver."""
    handle = b.serve.get_app_handle("bench")
    for _ in range(100):
        handle.remote().result()
    latencies = []
    for _ in range(b.calls):
        start = time.perf_counter()
        handle.remote().result()
        latencies.append(time.perf_counter() - start)
    b.results["handle_p50_ms"] = percentile(latencies, 0.5) * 1e3
    b.results["handle_p99_ms"] = percentile(latencies, 0.99) * 1e3
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < b.seconds:
        for response in [handle.remote() for _ in range(100)]:
            response.result()
        done += 100
    b.results["handle_rps_100"] = done / (time.perf_counter() - start)


def http_sweep(b: Bench) -> None:
    """Throughput vs replicas and vs concurrency; the 1-replica row gives the headline figures, then
    memory is read with the app back at one replica (after the load, as a user's would be)."""
    replica_counts, concurrencies = ((1, 2), (1, 32)) if b.quick else ((1, 2, 4), (1, 8, 32, 128))
    sweep: dict[str, dict[str, float]] = {}
    for replicas in replica_counts:
        b.run(trivial(b.serve).options(num_replicas=replicas).bind())
        http_load(b.url, 8, 1.0)  # warm-up: connections, routing tables, every replica reached
        for conns in concurrencies:
            sweep[f"{replicas}x{conns}"] = b.load(b.url, conns)
    b.results["sweep"] = sweep
    for conns in (1, 32):
        load = sweep[f"1x{conns}"]
        b.results[f"http_rps_{conns}"] = load.get("rps")
        b.results[f"http_p50_ms_{conns}"] = load.get("p50_ms")
        b.results[f"http_p99_ms_{conns}"] = load.get("p99_ms")
        b.results[f"http_errors_{conns}"] = load.get("errors")
    b.run(trivial(b.serve).bind())  # back to one replica
    b.results.update(memory_mb("bench"))


def composition(b: Bench) -> None:
    """A 2-deployment composition over HTTP."""
    others = define(b.serve, OTHERS)
    b.run(others["Front"].bind(others["Upper"].bind()), name="compose", route_prefix="/compose")
    assert get(b.url + "compose") == "COMPOSED"
    load = b.load(b.url + "compose", 32)
    b.results.update(compose_rps_32=load["rps"], compose_p50_ms_32=load["p50_ms"], compose_p99_ms_32=load["p99_ms"])
    b.serve.delete("compose")


def body(b: Bench) -> None:
    """A 1 MB request body, echoed as its length (``baseline.py`` serves the same route bare)."""
    b.run(define(b.serve, OTHERS)["Echo"].bind(), name="echo", route_prefix="/echo")
    assert get(b.url + "echo", b"x" * MB) == str(MB)
    load = b.load(b.url + "echo", 8, body_bytes=MB)
    b.results.update(body_1mb_rps_8=load["rps"], body_1mb_p50_ms_8=load["p50_ms"])
    b.serve.delete("echo")


def websocket(b: Bench) -> None:
    """A small text frame echoed on one WebSocket through the proxy, sequentially (``baseline.py`` serves the
    same echo bare, at the same path)."""
    b.run(define(b.serve, WEBSOCKET)["WsEcho"].bind(), name="ws", route_prefix="/ws")
    rtt = websocket_round_trips(f"ws://127.0.0.1:{b.port}/ws/echo", b.calls)
    b.results.update(ws_rtt_p50_ms_1=rtt["p50_ms"], ws_rtt_p99_ms_1=rtt["p99_ms"])
    b.serve.delete("ws")


def cold_start(b: Bench) -> None:
    """The first request to an app at zero replicas, answered."""
    b.run(define(b.serve, OTHERS)["Cold"].bind(), name="cold", route_prefix="/cold")
    cold: list[str] = []
    b.results["cold_start_s"] = timed(lambda: cold.append(get(b.url + "cold")))
    assert cold == ["warm"]
    b.serve.delete("cold")


def control_plane(b: Bench) -> None:
    """Redeploy, scale and delete the 1-replica "bench" app (deleted here: nothing after uses it)."""
    serve = b.serve
    b.results["redeploy_unchanged_s"] = timed(lambda: b.run(trivial(serve).bind()))
    b.results["redeploy_changed_s"] = timed(lambda: b.run(trivial(serve, "v2").bind()))
    assert serve.get_app_handle("bench").remote().result() == "v2"
    b.results["scale_1_to_2_s"] = timed(lambda: b.run(trivial(serve, "v2").options(num_replicas=2).bind()))
    b.run(trivial(serve, "v2").bind())
    b.results["scale_1_to_4_s"] = timed(lambda: b.run(trivial(serve, "v2").options(num_replicas=4).bind()))
    b.results["delete_s"] = timed(lambda: serve.delete("bench"))


def _nodes_placeholder(b: Bench) -> None:
    raise RuntimeError("the nodes group needs a cluster of its own: run_workloads runs nodes.node_spread")


def groups() -> dict[str, Callable[[Bench], None]]:
    """Every workload group by its ``--only`` name, in run order. Each group deletes the apps it made, so
    any subset runs alone; the model workloads come last, after the control plane, so nothing they leave
    behind (worker processes, object store use) touches the older figures."""
    import model_workloads  # here, not at the top: it imports this module

    return {
        "handle": handle_path,
        "http": http_sweep,
        "compose": composition,
        "body": body,
        "websocket": websocket,
        "cold": cold_start,
        "control": control_plane,
        "arrays": model_workloads.arrays,
        "batched": model_workloads.batched,
        "nodes": _nodes_placeholder,  # run by run_workloads on a cluster of its own (``nodes.node_spread``)
    }


def run_workloads(system: str, quick: bool, port: int, only: frozenset[str] | None = None) -> dict[str, Any]:
    """The figures of every group in ``only`` (all by default) for one system; the caller runs this in a
    fresh process with a fresh local Ray. ``first_deploy`` always runs: it starts Serve."""
    import importlib

    import nodes  # here, not at the top: it imports this module
    import ray

    serve = importlib.import_module("serve_nb" if system == "serve_nb" else "ray.serve")
    local = [name for name in groups() if (only is None or name in only) and name != "nodes"]
    b = Bench(serve, quick, port, results={"http_client": client_name()})
    seconds: dict[str, float] = {}
    b.results["group_seconds"] = seconds  # wall time per group, for budgeting a run (not a figure)
    if local:
        ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            seconds["first_deploy"] = timed(partial(first_deploy, b))
            for name in local:
                seconds[name] = timed(partial(groups()[name], b))
            b.results["http_errors_total"] = b.errors
            serve.shutdown()
        finally:
            ray.shutdown()  # also after a failed workload: this machine is shared
    if only is None or "nodes" in only:  # a 3-node cluster of its own, once the local Ray is gone
        started = time.perf_counter()
        b.results.update(nodes.node_spread(system, quick, port))
        seconds["nodes"] = time.perf_counter() - started
    return b.results
