"""Against a real Ray: Ray Serve's metrics on each node's metrics export port, access lines and request ids
in the Serve log files, and logging_config applied to a running replica."""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers import URL, run_scenario, serve_logs, wait_until

SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape() -> list[tuple[str, dict[str, str], float]]:
    """Every sample on every alive node's metrics export port (Prometheus text format)."""
    import ray

    samples = []
    for node in ray.nodes():
        port = node.get("MetricsExportPort")
        if not node.get("Alive") or not isinstance(port, int) or port <= 0:
            continue  # a node with no metrics agent (added by another test's cluster) exports nothing
        url = f"http://{node['NodeManagerAddress']}:{port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        for line in text.splitlines():
            found = SAMPLE.match(line)
            if found and not line.startswith("#"):
                labels = dict(LABEL.findall(found["labels"] or ""))
                samples.append((found["name"], labels, float(found["value"])))
    return samples


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(v for n, ls, v in samples if n == name and all(ls.get(k) == want for k, want in labels.items()))


def get(path: str, request_id: str | None = None) -> tuple[int, str, str]:
    headers = {"X-Request-ID": request_id} if request_id else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(URL + path, headers=headers), timeout=30) as r:
            return r.status, r.read().decode(), r.headers["x-request-id"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers["x-request-id"]


def composed_app(serve):
    @serve.deployment
    class Model:
        def predict(self, x: int) -> int:
            logging.getLogger("obs.model").info("predicting %s", x)
            if x < 0:
                raise ValueError("negative")
            return x * 2

    @serve.deployment
    class Front:
        def __init__(self, model):
            self.model = model

        async def __call__(self, request):
            x = int(request.query_params.get("x", "1"))
            return str(await self.model.predict.remote(x))

    return Front.bind(Model.bind())


def test_ray_serves_counters_reach_the_metrics_port_with_their_labels():
    import importlib.util

    if importlib.util.find_spec("prometheus_client") is None:  # pragma: no cover - ray without [default]
        pytest.skip("Ray's metrics agent needs ray[default] (prometheus_client), which serve_nb depends on")
    # A Ray of its own: what the session's Ray exports depends on every test before this one (other clusters,
    # nodes without a metrics agent), and exact counts need a clean slate.
    run_scenario(Path(__file__).with_name("metrics_scenario.py"), timeout_s=300)


def test_a_request_id_is_in_every_line_the_request_causes_across_composed_deployments(serve_instance):
    serve = serve_instance
    serve.run(composed_app(serve), name="ids", route_prefix="/ids")
    status, body, returned = get("/ids?x=21", request_id="trace-ids-1")
    assert (status, body, returned) == (200, "42", "trace-ids-1")
    _, _, made = get("/ids?x=1")
    assert made and made != "trace-ids-1", "an id is made when the client sends none"

    def logged() -> bool:
        proxy, front, model = serve_logs("proxy_*.log"), serve_logs("replica_ids_Front_*.log"), \
            serve_logs("replica_ids_Model_*.log")
        return (" trace-ids-1 -- GET /ids 200 " in proxy and " trace-ids-1 -- GET /ids 200 " in front
                and " trace-ids-1 -- obs.model: predicting 21" in model
                and " trace-ids-1 -- CALL predict OK " in model and f" {made} -- CALL predict OK " in model)

    wait_until(logged, timeout_s=20, interval_s=0.1, what="the request's lines in the proxy's and both replicas' logs")


def test_a_json_logging_config_and_access_log_off_apply_to_the_running_replica(serve_instance):
    serve = serve_instance

    @serve.deployment(logging_config={"encoding": "JSON"})
    class Quiet:
        def __call__(self, request):
            logging.getLogger("obs.quiet").warning("kept")
            return "ok"

    serve.run(Quiet.bind(), name="jsonlog", route_prefix="/jsonlog")
    assert get("/jsonlog", request_id="json-1")[0] == 200

    def records() -> list[dict]:
        return [json.loads(line) for line in serve_logs("replica_jsonlog_Quiet_*.log").splitlines() if line]

    first = wait_until(lambda: [r for r in records() if r.get("request_id") == "json-1"] or None, timeout_s=20,
                       interval_s=0.1, what="JSON lines of the request")
    assert {r["message"].split(" ")[0] for r in first} == {"obs.quiet:", "GET"}
    assert all(r["deployment"] == "Quiet" and r["application"] == "jsonlog" and r["route"] == "/jsonlog"
               for r in first)
    replica = first[0]["replica"]

    serve.run(Quiet.options(logging_config={"encoding": "JSON", "enable_access_log": False}).bind(),
              name="jsonlog", route_prefix="/jsonlog")
    assert get("/jsonlog", request_id="json-2")[0] == 200
    second = wait_until(lambda: [r for r in records() if r.get("request_id") == "json-2"] or None, timeout_s=20,
                        interval_s=0.1, what="the user's line of the second request")
    assert [r["message"] for r in second] == ["obs.quiet: kept"], "no access line once it is off"
    assert second[0]["replica"] == replica, "applied in place: the same replica"


def test_a_bad_logging_config_is_refused_before_anything_deploys(serve_instance):
    serve = serve_instance
    with pytest.raises(ValueError, match="encoding must be TEXT or JSON"):
        @serve.deployment(logging_config={"encoding": "YAML"})
        def nope(request):
            return "x"
    assert "nope" not in serve.status().applications


def _proxy_json_lines() -> list[dict]:
    return [json.loads(line) for line in serve_logs("proxy_*.log").splitlines() if line.startswith("{")]


GREETER_MODULE = """
import serve_nb as serve


@serve.deployment
class Greeter:
    def __call__(self, request) -> str:
        return "hello"


app = Greeter.bind()
"""


def test_the_proxies_logging_config_applies_to_running_proxies_from_serve_start_and_a_config_file(
        serve_instance, tmp_path, monkeypatch):
    serve = serve_instance
    (tmp_path / "plog_greeter.py").write_text(GREETER_MODULE)
    monkeypatch.chdir(tmp_path)  # a config dict's import paths resolve from the working directory
    monkeypatch.syspath_prepend(str(tmp_path))

    @serve.deployment
    def hello(request):
        return "hi"

    serve.run(hello.bind(), name="plog", route_prefix="/plog")
    try:
        # serve.start returns once every proxy writes as told: no waiting needed before the requests.
        serve.start(logging_config={"encoding": "JSON"})
        assert get("/plog", request_id="plog-json")[0] == 200
        serve.start(logging_config={"enable_access_log": False})
        assert get("/plog", request_id="plog-off")[0] == 200
        serve.start(logging_config={})  # Ray Serve's defaults again: text lines
        assert get("/plog", request_id="plog-text")[0] == 200
        wait_until(lambda: " plog-text -- GET /plog 200 " in serve_logs("proxy_*.log"), timeout_s=20,
                   interval_s=0.1, what="the text access line once the defaults are back")
        [json_line] = [r for r in _proxy_json_lines() if r.get("request_id") == "plog-json"]
        assert json_line["component_name"] == "proxy" and json_line["message"].startswith("GET /plog 200 ")
        assert "plog-off" not in serve_logs("proxy_*.log"), "no access line while the access log is off"

        # A config file's top-level logging_config: the proxies', and that of each app that sets none.
        serve.deploy_config({
            "logging_config": {"encoding": "JSON"},
            "applications": [{"name": "plog", "route_prefix": "/plog",
                              "import_path": "plog_greeter:app"}],
        })
        assert get("/plog", request_id="plog-file")[0] == 200
        found = wait_until(lambda: [r for r in _proxy_json_lines() if r.get("request_id") == "plog-file"] or None,
                           timeout_s=20, interval_s=0.1, what="the proxy's JSON line for the config file's request")
        assert found[0]["message"].startswith("GET /plog 200 ")
        replica_lines = wait_until(
            lambda: [r for r in (json.loads(line) for line in serve_logs("replica_plog_Greeter_*.log").splitlines()
                                 if line.startswith("{")) if r.get("request_id") == "plog-file"] or None,
            timeout_s=20, interval_s=0.1, what="the replica's JSON access line")
        assert replica_lines[0]["message"].startswith("GET /plog 200 ")
    finally:
        serve.start(logging_config={})  # the shared Serve's proxies back to the defaults for the tests after
