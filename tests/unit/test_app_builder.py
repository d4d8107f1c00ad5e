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
    graph, specs = build_app(Ingress.bind(Model.bind()), "app", overrides)
    return {spec.name: spec.config for spec in specs}


def test_without_overrides_the_options_set_in_code_are_deployed():
    model = configs()["Model"]
    assert (model.num_replicas, model.user_config, model.ray_actor_options["num_cpus"]) == (2, {"threshold": 0.5}, 0.5)


def test_overrides_replace_code_options_and_whole_dicts_replace_whole():
    model = configs({"Model": {"num_replicas": 3, "user_config": {"other": 1}, "ray_actor_options": {"num_gpus": 0}}})["Model"]
    assert (model.num_replicas, model.user_config) == (3, {"other": 1})
    assert model.ray_actor_options.get("num_cpus", 1) != 0.5  # the code's dict is not merged key by key


def test_an_autoscaling_override_replaces_a_fixed_count_set_in_code():
    model = configs({"Model": {"autoscaling_config": {"min_replicas": 1, "max_replicas": 4}}})["Model"]
    assert model.autoscaling_config is not None and model.autoscaling_config.max_replicas == 4


def test_an_override_for_a_deployment_the_app_does_not_have_names_the_ones_it_has():
    with pytest.raises(ValueError, match="no deployment named 'Modle'; its deployments: Model, Ingress"):
        configs({"Modle": {"num_replicas": 3}})


def test_an_invalid_override_value_is_refused_as_in_code():
    with pytest.raises((TypeError, ValueError), match="num_replicas"):
        configs({"Model": {"num_replicas": -1}})
