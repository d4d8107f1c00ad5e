"""Bad arguments to the public API raise a clear error before anything is touched (no Ray here).

``serve.run(app, nmae="exp")`` used to deploy as ``default``, silently replacing the app running there.
These tests replace the two ways the API reaches the cluster (``api._bootstrap`` and ``api._data_client``)
with tripwires: an argument check that passes runs into the tripwire, one that fails never gets there.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import pytest

import serve_nb as serve
from serve_nb import api
from serve_nb.config import HTTPOptions, ProxyLocation
from serve_nb.core.keywords import UnsupportedOptionError
from serve_nb.data.handle import DeploymentHandle


class Touched(Exception):
    """Raised by the tripwires: the call got past its argument checks and tried to reach the cluster."""


@dataclass
class Tripwire:
    """Stands in for ``serve_nb.bootstrap`` and ``serve_nb.data.client``; records what reached it."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        def touch(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            raise Touched(name)

        return touch


@pytest.fixture
def tripwire(monkeypatch: pytest.MonkeyPatch) -> Tripwire:
    wire = Tripwire()
    monkeypatch.setattr(api, "_bootstrap", lambda: wire)
    monkeypatch.setattr(api, "_data_client", lambda: wire)
    return wire


@serve.deployment
class Echo:
    def __call__(self, x: Any) -> Any:
        return x


# --------------------------------------------------------------------------- serve.run


def test_run_with_a_misspelt_keyword_raises_naming_it_and_the_valid_ones(tripwire: Tripwire) -> None:
    with pytest.raises(TypeError) as info:
        serve.run(Echo.bind(), nmae="exp")
    message = str(info.value)
    assert "serve.run()" in message and "'nmae'" in message
    for valid in ("name", "route_prefix", "blocking", "logging_config", "_blocking"):
        assert valid in message
    assert tripwire.calls == []  # nothing reached the cluster: the running "default" app is untouched


def test_run_names_every_misspelt_keyword(tripwire: Tripwire) -> None:
    with pytest.raises(TypeError, match="'nmae', 'route_prefx'"):
        serve.run(Echo.bind(), nmae="exp", route_prefx="/x")
    assert tripwire.calls == []


@pytest.mark.parametrize(
    "keyword, value",
    [
        ("_local_testing_mode", True),
        ("external_scaler_enabled", True),
        ("controller_options", {"runtime_env": {}}),
    ],
)
def test_run_refuses_ray_serve_keywords_serve_nb_does_not_support_yet(
    tripwire: Tripwire, keyword: str, value: Any
) -> None:
    with pytest.raises(UnsupportedOptionError) as info:
        serve.run(Echo.bind(), **{keyword: value})
    assert f"'{keyword}'" in str(info.value) and "does not support yet" in str(info.value)
    assert isinstance(info.value, TypeError) and isinstance(info.value, NotImplementedError)
    assert tripwire.calls == []


def test_run_refuses_a_bad_logging_config_before_touching_anything(tripwire: Tripwire) -> None:
    with pytest.raises(ValueError, match=r"serve.run\(logging_config=...\): encoding must be TEXT or JSON"):
        serve.run(Echo.bind(), logging_config={"encoding": "XML"})
    assert tripwire.calls == []


def test_run_accepts_ray_serve_keywords_at_their_defaults(tripwire: Tripwire) -> None:
    with pytest.raises(Touched):  # got past every check to the cluster
        serve.run(
            Echo.bind(), logging_config=None, _local_testing_mode=False, external_scaler_enabled=False,
            controller_options=None,
        )


def test_run_does_not_take_a_false_like_value_for_a_false_default(tripwire: Tripwire) -> None:
    with pytest.raises(UnsupportedOptionError, match="_local_testing_mode"):
        serve.run(Echo.bind(), _local_testing_mode="no")
    assert tripwire.calls == []


@pytest.mark.parametrize("prefix", ["/a b?#", "//", "/a/", "/{id}", "no-slash"])
def test_run_with_a_route_prefix_no_request_could_reach_deploys_nothing(tripwire: Tripwire, prefix: str) -> None:
    with pytest.raises(ValueError, match="Invalid route_prefix"):
        serve.run(Echo.bind(), name="p", route_prefix=prefix)
    assert tripwire.calls == []


# --------------------------------------------------------------------------- serve.start


def test_start_with_an_unknown_keyword_raises_before_starting_anything(tripwire: Tripwire) -> None:
    with pytest.raises(TypeError) as info:
        serve.start(http_option={"port": 8001})
    assert "'http_option'" in str(info.value) and "http_options" in str(info.value)
    assert tripwire.calls == []


@pytest.mark.parametrize("keyword", ["grpc_options", "tracing_config", "controller_options"])
def test_start_refuses_ray_serve_options_serve_nb_does_not_support_yet(tripwire: Tripwire, keyword: str) -> None:
    with pytest.raises(UnsupportedOptionError, match=keyword):
        serve.start(**{keyword: {"x": 1}})
    assert tripwire.calls == []
    with pytest.raises(Touched):
        serve.start(**{keyword: None})


def test_start_refuses_a_bad_logging_config_before_starting_anything(tripwire: Tripwire) -> None:
    with pytest.raises(ValueError, match=r"serve.start\(logging_config=...\) has unknown keys \['x'\]"):
        serve.start(logging_config={"x": 1})
    with pytest.raises(TypeError, match="enable_access_log must be True or False"):
        serve.start(logging_config={"enable_access_log": "no"})
    assert tripwire.calls == []
    with pytest.raises(Touched):  # a good one goes on to the cluster
        serve.start(logging_config={"enable_access_log": False, "encoding": "JSON"})


@pytest.mark.parametrize(
    "proxy_location, http_options, expected",
    [
        ("HeadOnly", None, ProxyLocation.HeadOnly),
        ("Disabled", None, ProxyLocation.NoServer),
        (ProxyLocation.NoServer, {"port": 8123}, ProxyLocation.NoServer),
        ("HeadOnly", {"location": "EveryNode"}, ProxyLocation.EveryNode),  # http_options' location wins
        (None, None, ProxyLocation.EveryNode),
    ],
)
def test_start_applies_proxy_location_as_ray_serve_does(
    tripwire: Tripwire, proxy_location: Any, http_options: Any, expected: ProxyLocation
) -> None:
    with pytest.raises(Touched):
        serve.start(proxy_location=proxy_location, http_options=http_options)
    [(name, kwargs)] = tripwire.calls
    assert name == "connect_client" and kwargs["http_options"].location == expected
    if http_options and "port" in http_options:
        assert kwargs["http_options"].port == http_options["port"]


def test_start_with_an_unknown_proxy_location_names_the_valid_ones(tripwire: Tripwire) -> None:
    with pytest.raises(ValueError, match="proxy_location must be one of .*'HeadOnly'.*got 'Everywhere'"):
        serve.start(proxy_location="Everywhere")
    assert tripwire.calls == []


# --------------------------------------------------------------------------- every exported function


def _exported_functions() -> list[str]:
    return sorted(name for name in serve.__all__ if inspect.isfunction(getattr(serve, name)))


@pytest.mark.parametrize("name", _exported_functions())
def test_every_exported_function_refuses_an_unknown_keyword_before_doing_anything(
    tripwire: Tripwire, name: str
) -> None:
    func = getattr(serve, name)
    required = [
        p for p in inspect.signature(func).parameters.values()
        if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    with pytest.raises(TypeError, match="definitely_not_an_option"):
        func(*[None] * len(required), definitely_not_an_option=1)
    assert tripwire.calls == []


def test_get_deployment_handle_takes_ray_serve_check_exists_keyword(tripwire: Tripwire) -> None:
    handle = serve.get_deployment_handle("Echo", "app", _check_exists=False, _record_telemetry=False)
    assert (handle.deployment_name, handle.app_name) == ("Echo", "app")
    assert tripwire.calls == []  # no existence check: nothing asked of the controller


def test_delete_without_serve_running_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoClient:
        @staticmethod
        def get_client() -> None:
            return None

    monkeypatch.setattr(api, "_data_client", lambda: NoClient)
    with pytest.raises(serve.exceptions.RayServeException, match="not running.*no application 'gone'"):
        serve.delete("gone")


# --------------------------------------------------------------------------- handle.options


def test_handle_options_with_a_misspelt_keyword_names_it_and_the_valid_ones() -> None:
    with pytest.raises(TypeError) as info:
        DeploymentHandle("Echo").options(method="other")
    assert "'method'" in str(info.value) and "method_name" in str(info.value)


@pytest.mark.parametrize(
    "keyword",
    ["session_id", "_prefer_local_routing", "_by_reference", "request_serialization",
     "response_serialization"],
)
def test_handle_options_refuses_ray_serve_options_serve_nb_does_not_support_yet(keyword: str) -> None:
    with pytest.raises(NotImplementedError, match=f"'{keyword}'.*does not support yet"):
        DeploymentHandle("Echo").options(**{keyword: "x"})


def test_handle_options_still_sets_method_and_stream() -> None:
    handle = DeploymentHandle("Echo", "app").options(method_name="other", stream=True, use_new_handle_api=True)
    assert repr(handle) == "DeploymentHandle(deployment='Echo', app='app', method_name='other')"
    assert handle.other.deployment_name == "Echo"


def test_an_idempotent_handle_stays_idempotent_through_methods_options_and_pickling() -> None:
    import pickle

    handle = DeploymentHandle("Echo", "app").options(idempotent=True)
    assert repr(handle.other) == "DeploymentHandle(deployment='Echo', app='app', method_name='other', idempotent=True)"
    assert "idempotent=True" in repr(pickle.loads(pickle.dumps(handle.options(stream=True))))
    assert "idempotent" not in repr(handle.options(idempotent=False))
    with pytest.raises(TypeError, match="must be True or False"):
        DeploymentHandle("Echo").options(idempotent="yes")


def test_a_handles_model_id_survives_methods_options_and_pickling_and_must_be_a_string() -> None:
    import pickle

    handle = DeploymentHandle("Echo", "app").options(multiplexed_model_id="m1")
    assert repr(handle.other) == ("DeploymentHandle(deployment='Echo', app='app', method_name='other', "
                                  "multiplexed_model_id='m1')")
    assert "multiplexed_model_id='m1'" in repr(pickle.loads(pickle.dumps(handle.options(stream=True))))
    assert "multiplexed_model_id='m2'" in repr(handle.options(multiplexed_model_id="m2"))
    with pytest.raises(TypeError, match="must be a string, got int"):
        DeploymentHandle("Echo").options(multiplexed_model_id=3)


def test_http_options_keys_are_still_checked_by_start(tripwire: Tripwire) -> None:
    with pytest.raises(ValueError, match="Unknown http_options key"):
        serve.start(http_options={"prot": 8001})
    assert tripwire.calls == []
    assert HTTPOptions.from_user(None).location == ProxyLocation.EveryNode


def test_exceptions_are_also_the_classes_ray_serve_code_catches() -> None:
    from serve_nb.exceptions import DeployConflictError, DeployError, RayServeException

    assert issubclass(DeployError, RuntimeError) and issubclass(DeployError, RayServeException)
    assert issubclass(DeployConflictError, RayServeException) and issubclass(DeployConflictError, ValueError)
