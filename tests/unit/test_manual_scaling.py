"""serve.scale_deployment checks its arguments before it looks for a running serve_nb (no Ray here)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import serve_nb as serve


@pytest.mark.parametrize("num_replicas", [0, -1, 1.5, "2", None, True])
def test_a_bad_replica_count_is_refused_before_any_cluster_call(num_replicas):
    with pytest.raises(ValueError, match="num_replicas must be an integer >= 1"):
        serve.scale_deployment("app", "Model", num_replicas)


@pytest.mark.parametrize("app_name, deployment_name, what", [("", "Model", "app_name"), ("app", "", "deployment_name"),
                                                             (None, "Model", "app_name"), ("app", 3, "deployment_name")])
def test_names_must_be_non_empty_strings(app_name, deployment_name, what):
    with pytest.raises(ValueError, match=f"{what} must be a non-empty string"):
        serve.scale_deployment(app_name, deployment_name, 2)


def test_valid_arguments_without_serve_running_say_so():
    """In a fresh interpreter (no Ray connected): the test session may have a Serve of its own running."""
    code = (
        "import serve_nb as serve\n"
        "from serve_nb.exceptions import RayServeException\n"
        "try:\n"
        "    serve.scale_deployment('app', 'Model', 2)\n"
        "except RayServeException as exc:\n"
        "    print('RAISED', exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("RAISED serve_nb is not running"), result.stdout
