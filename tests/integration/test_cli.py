"""The ``serve_nb`` command against real local Rays, as a user types it: run a Ray Serve config and see it from
a second terminal, apply another config, stop with Ctrl-C; --reload with a good and a broken save; errors as
one line on stderr, before anything is deployed."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from cli_support import Serving, cli, get
from serve_nb.cli.cluster import RUN_RECORD
from helpers import wait_until

PORT = 8471
URL = f"http://127.0.0.1:{PORT}"

GREET = '''
import serve_nb as serve
from starlette.requests import Request


@serve.deployment
class Greeter:
    def __init__(self, greeting: str = "Hello"):
        self.greeting = greeting
        self.punct = "!"

    def reconfigure(self, config: dict) -> None:
        self.punct = config.get("punct", "!")

    async def __call__(self, request: Request) -> str:
        print("answering", request.query_params.get("name", "world"))
        return f"{self.greeting}, {request.query_params.get('name', 'world')}{self.punct}"


app = Greeter.bind("Hi")


def builder(args: dict):
    return Greeter.bind(args.get("greeting", "Hey"))
'''

# The shape of Ray Serve's documented multi-application config (proxy_location, http_options, applications with
# import_path, args, and per-deployment overrides).
CONFIG = f'''
proxy_location: EveryNode
http_options:
  host: 127.0.0.1
  port: {PORT}
applications:
  - name: greet
    route_prefix: /greet
    import_path: greet:app
    deployments:
      - name: Greeter
        num_replicas: 2
        user_config:
          punct: "?"
  - name: built
    route_prefix: /built
    import_path: greet:builder
    args:
      greeting: Yo
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "greet.py").write_text(GREET)
    (tmp_path / "serve_config.yaml").write_text(CONFIG)
    return tmp_path


def test_run_a_config_see_it_from_a_second_terminal_apply_another_and_stop_with_ctrl_c(ray_session, project):
    serving = Serving(["run", "serve_config.yaml"], project)
    try:
        serving.wait_for_line("Serving; Ctrl-C to stop.")
        assert f"Deployed application 'greet' at {URL}/greet." in serving.lines
        assert get(f"{URL}/greet?name=cli").text == "Hi, cli?"  # the config's user_config reached reconfigure
        assert get(f"{URL}/built").text == "Yo, world!"  # args went to the builder
        serving.wait_for_line("answering cli")  # replica output streams to the terminal

        status = cli(["status"], project)  # no flags: it finds the cluster `serve_nb run` started
        assert status.returncode == 0, status.stderr
        apps = yaml.safe_load(status.stdout)["applications"]
        assert apps["greet"]["status"] == "RUNNING"
        assert apps["greet"]["deployments"]["Greeter"]["replica_states"] == {"RUNNING": 2}

        shown = cli(["config"], project)
        assert shown.returncode == 0, shown.stderr
        documents = list(yaml.safe_load_all(shown.stdout))
        assert {d["name"] for d in documents} == {"greet", "built"}

        # Declarative: the new config scales greet in place and drops the 'built' application.
        (project / "smaller.yaml").write_text(CONFIG.split("  - name: built")[0].replace("num_replicas: 2", "num_replicas: 1"))
        applied = cli(["deploy", "smaller.yaml"], project)
        assert applied.returncode == 0, applied.stderr

        def applied_in_place() -> bool:
            now = yaml.safe_load(cli(["status"], project).stdout)["applications"]
            return set(now) == {"greet"} and now["greet"]["deployments"]["Greeter"]["replica_states"] == {"RUNNING": 1}

        wait_until(applied_in_place, timeout_s=60, what="the smaller config applied")
        assert get(f"{URL}/greet").text == "Hi, world?"

        # The cluster named explicitly, and a run that returns once deployed.
        address = json.loads(RUN_RECORD.read_text())["address"]
        quick = cli(["run", "greet:app", "--name", "greet", "--route-prefix", "/quick", "--non-blocking", "-a", address],
                    project)
        assert quick.returncode == 0, quick.stderr
        assert f"Deployed application 'greet' at {URL}/quick." in quick.stdout
        # Same code: the replica is kept (no user_config now means no reconfigure call, as in Ray Serve).
        assert get(f"{URL}/quick?name=again").text == "Hi, again?"
        # `serve_nb shutdown` from the second terminal: every app goes, the serving terminal's Ray stays.
        stopped = cli(["shutdown", "-y"], project)
        assert stopped.returncode == 0 and "serve_nb shut down." in stopped.stdout, stopped.stderr
        assert yaml.safe_load(cli(["status"], project).stdout)["applications"] == {}

        assert serving.interrupt() == 0
        assert "Shutting down serve_nb..." in serving.lines
        after = cli(["status"], project)
        assert after.returncode == 1 and "No running Ray cluster found" in after.stderr  # its Ray went with it
    finally:
        serving.kill()


def test_reload_rolls_only_changed_code_and_a_broken_save_keeps_the_last_good_version(ray_session, tmp_path):
    (tmp_path / "pipeline.py").write_text(textwrap.dedent('''
        import os
        import serve_nb as serve


        @serve.deployment
        class Model:
            def __call__(self, x):
                return "v1"


        @serve.deployment
        class Ingress:
            def __init__(self, model):
                self.model = model

            async def __call__(self, request):
                return f"{await self.model.remote(1)} from ingress pid {os.getpid()}"


        app = Ingress.bind(Model.bind())
    '''))
    (tmp_path / "serve_config.yaml").write_text(
        f"http_options: {{port: {PORT + 1}}}\napplications:\n  - import_path: pipeline:app\n    route_prefix: /p\n"
    )
    serving = Serving(["run", "serve_config.yaml", "--reload"], tmp_path)
    try:
        serving.wait_for_line("Watching")
        first = get(f"http://127.0.0.1:{PORT + 1}/p").text
        assert first.startswith("v1 from ingress pid ")
        source = (tmp_path / "pipeline.py").read_text()
        (tmp_path / "pipeline.py").write_text(source.replace('return "v1"', 'return "v2"'))
        line = serving.wait_for_line("Reloaded in")
        assert "'default': Model updated; Ingress unchanged" in line
        second = get(f"http://127.0.0.1:{PORT + 1}/p").text
        assert second == first.replace("v1", "v2")  # same ingress process: only Model rolled

        mark = len(serving.lines)
        (tmp_path / "pipeline.py").write_text(source.replace('return "v1"', 'return "v3'))  # a syntax error
        failed = serving.wait_for_line("Reload failed", after=mark)
        assert "SyntaxError" in failed and "still serving the last good version" in failed
        assert get(f"http://127.0.0.1:{PORT + 1}/p").text == second

        mark = len(serving.lines)
        (tmp_path / "pipeline.py").write_text(source.replace('return "v1"', 'return "v4"'))  # the watcher is alive
        serving.wait_for_line("Reloaded in", after=mark)
        assert get(f"http://127.0.0.1:{PORT + 1}/p").text.startswith("v4")
        assert serving.interrupt() == 0
    finally:
        serving.kill()


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("applications:\n  - name: a\n    import_path: greet:app\n    route_prefix: nope\n",
         "serve_config.yaml:4: applications[0].route_prefix:"),
        ("applications:\n  - name: a\n    import_path: greet:app\n    deployments:\n      - name: Greter\n        num_replicas: 2\n",
         "serve_config.yaml:5:"),
        ("applications:\n  - name: a\n    import_path: nowhere:app\n", "cannot import 'nowhere'"),
        ("applications:\n  - name: a\n    import_path: greet:app\n    deployments:\n      - name: Greeter\n"
         "        num_replicas: 2\n        autoscaling_config: {max_replicas: 3}\n", "num_replicas"),
    ],
)
def test_a_bad_config_is_one_line_on_stderr_and_nothing_starts(project, config, expected):
    (project / "serve_config.yaml").write_text(config)
    result = cli(["run", "serve_config.yaml"], project)
    assert result.returncode == 1
    assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "Deployed" not in result.stdout


def test_commands_needing_a_cluster_say_how_to_get_one(tmp_path):
    for command in (["status"], ["config"], ["deploy", "missing.yaml"], ["shutdown", "-y"]):
        result = cli(command, tmp_path)
        assert result.returncode == 1, command
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_build_writes_a_config_with_the_options_set_in_code(project):
    (project / "tuned.py").write_text(GREET.replace("@serve.deployment", "@serve.deployment(num_replicas=3, "
                                                                          "user_config={'punct': '.'})"))
    result = cli(["build", "tuned:app", "-o", "built.yaml"], project)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((project / "built.yaml").read_text())
    [app] = config["applications"]
    assert app["import_path"] == "tuned:app"
    assert app["deployments"] == [{"name": "Greeter", "num_replicas": 3, "user_config": {"punct": "."}}]
