"""serve.scale_deployment checks its arguments before it looks for a running serve_nb (no Ray here)."""

from __future__ import annotations

import pytest

import serve_nb as serve
from serve_nb.exceptions import RayServeException


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
    with pytest.raises(RayServeException, match="not running"):
        serve.scale_deployment("app", "Model", 2)
