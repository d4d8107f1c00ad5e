"""On a real Ray: a call with bad input raises, and the applications already running are exactly as they were.

Before, ``serve.run(app, nmae="exp")`` deployed ``app`` as ``default`` and replaced the app running there, and
``route_prefix="/a b?#"`` deployed an app that showed RUNNING but that no request could reach.
"""

from __future__ import annotations

import logging

import pytest

import serve_nb as serve
from serve_nb.core.keywords import UnsupportedOptionError
from helpers import deployment_detail


@serve.deployment(num_replicas=2)
class Original:
    def __call__(self) -> str:
        return "original"

    def replica_id(self) -> str:
        return serve.get_replica_context().replica_id


@serve.deployment
class Replacement:
    def __call__(self) -> str:
        return "replacement"


def _snapshot(app: str, deployment: str) -> tuple[object, ...]:
    """What a user would compare: the app's status and ingress, and its replicas (ids and states)."""
    status = serve.status().applications[app]
    replicas = tuple(sorted((r.replica_id, r.state) for r in deployment_detail(app, deployment).replicas))
    return status.status, status.ingress, set(status.deployments), replicas


@pytest.fixture
def running_default(serve_instance):
    """The ``default`` app, two replicas, answering; deleted afterwards."""
    handle = serve.run(Original.bind(), name="default", route_prefix="/bad-input-default")
    assert handle.remote().result() == "original"
    yield handle
    serve.delete("default")


def test_misspelt_keyword_raises_and_the_running_default_app_is_unchanged(running_default) -> None:
    before = _snapshot("default", "Original")
    apps_before = set(serve.status().applications)

    with pytest.raises(TypeError, match="'nmae'.*Valid keyword arguments: .*name"):
        serve.run(Replacement.bind(), nmae="exp")

    assert _snapshot("default", "Original") == before  # same replicas, none replaced
    assert set(serve.status().applications) == apps_before  # no "exp" app either
    assert running_default.remote().result() == "original"


def test_unsupported_ray_serve_keyword_raises_and_the_running_default_app_is_unchanged(running_default) -> None:
    before = _snapshot("default", "Original")

    with pytest.raises(UnsupportedOptionError, match="external_scaler_enabled"):
        serve.run(Replacement.bind(), external_scaler_enabled=True)

    assert _snapshot("default", "Original") == before
    assert running_default.remote().result() == "original"


def test_a_bad_logging_config_raises_and_the_running_default_app_is_unchanged(running_default) -> None:
    before = _snapshot("default", "Original")

    with pytest.raises(ValueError, match="log_level must be one of"):
        serve.run(Replacement.bind(), logging_config={"log_level": "LOUD"})

    assert _snapshot("default", "Original") == before
    assert running_default.remote().result() == "original"


@pytest.mark.parametrize("prefix", ["/a b?#", "//"])
def test_route_prefix_no_request_could_reach_deploys_nothing(serve_instance, prefix: str) -> None:
    apps_before = set(serve.status().applications)

    with pytest.raises(ValueError, match="Invalid route_prefix"):
        serve.run(Replacement.bind(), name="bad-prefix", route_prefix=prefix)

    assert set(serve.status().applications) == apps_before
    assert "bad-prefix" not in serve.status().applications


def test_deleting_an_app_that_does_not_exist_warns_and_changes_nothing(running_default, caplog) -> None:
    before = _snapshot("default", "Original")
    apps_before = set(serve.status().applications)

    with caplog.at_level(logging.WARNING, logger="serve_nb"):
        serve.delete("no_such_app")  # no error, as in Ray Serve: cleanup code may delete unconditionally

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no application named 'no_such_app'" in m and "default" in m for m in warnings), warnings
    assert set(serve.status().applications) == apps_before
    assert _snapshot("default", "Original") == before
    assert running_default.remote().result() == "original"
