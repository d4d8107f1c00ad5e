"""Building an application for the controller, with a config file's per-deployment options applied."""

from __future__ import annotations

import pytest

import serve_nb as serve
from serve_nb.app_builder import build_app


@serve.deployment(num_replicas=2, user_config={"threshold": 0.5}, ray_actor_options={"num_cpus": 0.5})
class Model:
    def reconfigure(self, config: dict) -> None:
        self.config = config


@serve.deployment
class Ingress:
    def __init__(self, model) -> None:
        self.model = model


def configs(overrides=None):
    overrides = overrides or {}

    def options_for(name, in_code):
        return {**in_code, **overrides[name]} if name in overrides else None

    def check_names(names):
        unknown = set(overrides) - set(names)
        if unknown:
            raise ValueError(f"unknown {sorted(unknown)}; known {list(names)}")

    graph, specs = build_app(Ingress.bind(Model.bind()), "app", options_for, check_names=check_names)
    return {spec.name: spec.config for spec in specs}


def test_without_overrides_the_options_set_in_code_are_deployed():
    model = configs()["Model"]
    assert (model.num_replicas, model.user_config, model.ray_actor_options["num_cpus"]) == (2, {"threshold": 0.5}, 0.5)


def test_options_given_for_a_deployment_are_the_ones_deployed():
    model = configs({"Model": {"num_replicas": 3, "user_config": {"other": 1}, "ray_actor_options": {"num_gpus": 0}}})["Model"]
    assert (model.num_replicas, model.user_config) == (3, {"other": 1})
    assert model.ray_actor_options.get("num_cpus", 1) != 0.5  # the code's dict is not merged key by key


def test_the_name_check_sees_every_deployment_before_anything_is_built():
    with pytest.raises(ValueError, match=r"unknown \['Modle'\]; known \['Model', 'Ingress'\]"):
        configs({"Modle": {"num_replicas": 3}})


def test_the_applications_runtime_env_goes_to_deployments_that_name_none():
    graph, specs = build_app(Ingress.bind(Model.bind()), "app", runtime_env={"env_vars": {"A": "1"}})
    assert all(spec.config.ray_actor_options["runtime_env"] == {"env_vars": {"A": "1"}} for spec in specs)


def test_an_invalid_override_value_is_refused_as_in_code():
    with pytest.raises((TypeError, ValueError), match="num_replicas"):
        configs({"Model": {"num_replicas": -1}})


def test_an_applications_logging_config_goes_to_each_deployment_that_sets_none():
    from serve_nb.core.log_format import LogEncoding, LoggingConfig

    own = LoggingConfig.parse({"log_level": "DEBUG"})
    app_wide = LoggingConfig.parse({"encoding": "JSON", "enable_access_log": False})
    _, specs = build_app(Ingress.bind(Model.options(logging_config=own).bind()), "app", logging_config=app_wide)
    by_name = {spec.name: spec.config.logging_config for spec in specs}
    assert by_name["Ingress"] == app_wide and by_name["Ingress"].encoding is LogEncoding.JSON
    assert by_name["Model"] == own, "a deployment's own logging_config wins"
