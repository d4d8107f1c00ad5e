"""serve_nb.deployment: @deployment, Deployment.options/.bind/__call__, user_config checks."""

from __future__ import annotations

import pytest

from serve_nb.config import AutoscalingConfig
from serve_nb.deployment import Application, Deployment, deployment


class Plain:
    def __call__(self, x):
        return x


class WithReconfigure:
    def reconfigure(self, config):
        self.config = config


def plain_function(x):
    return x


# --------------------------------------------------------------------------- decorator forms


def test_bare_decorator_on_class():
    @deployment
    class Model:
        pass

    assert isinstance(Model, Deployment)
    assert Model.name == "Model"
    assert Model.is_class
    assert Model.num_replicas == 1
    assert Model.func_or_class.__name__ == "Model"


def test_bare_decorator_on_function():
    @deployment
    def handler(request):
        return "ok"

    assert isinstance(handler, Deployment)
    assert handler.name == "handler"
    assert not handler.is_class
    assert handler.func_or_class(None) == "ok"


def test_decorator_with_options_on_class():
    @deployment(num_replicas=3, max_ongoing_requests=7, ray_actor_options={"num_gpus": 1})
    class Model:
        pass

    assert isinstance(Model, Deployment)
    assert Model.name == "Model"
    assert Model.num_replicas == 3
    assert Model.max_ongoing_requests == 7
    assert Model.ray_actor_options == {"num_gpus": 1, "num_cpus": 1.0}


def test_decorator_with_options_on_function():
    @deployment(name="Greeter", max_queued_requests=10)
    def greet(name):
        return f"hi {name}"

    assert greet.name == "Greeter"
    assert greet.max_queued_requests == 10
    assert not greet.is_class


def test_empty_parentheses_decorator():
    @deployment()
    class Model:
        pass

    assert isinstance(Model, Deployment) and Model.name == "Model"


def test_functional_form():
    d = deployment(Plain, name="P", num_replicas=2)
    assert d.name == "P"
    assert d.num_replicas == 2
    assert d.func_or_class is Plain


def test_default_name_is_dunder_name_and_explicit_name_wins():
    assert deployment(Plain).name == "Plain"
    assert deployment(plain_function).name == "plain_function"
    assert deployment(name="Custom")(Plain).name == "Custom"


@pytest.mark.parametrize("bad", ["a#b", "a/b"])
def test_name_with_reserved_characters_rejected(bad):
    with pytest.raises(ValueError, match="may not contain"):
        deployment(Plain, name=bad)


def test_empty_name_falls_back_to_dunder_name():
    assert deployment(Plain, name="").name == "Plain"


def test_name_must_be_string():
    with pytest.raises(ValueError, match="non-empty string"):
        deployment(Plain, name=123)


def test_unknown_option_in_decorator_is_type_error():
    with pytest.raises(TypeError, match="'num_replica'"):
        deployment(num_replica=2)


def test_ray_serve_only_option_in_decorator_is_type_error():
    with pytest.raises(TypeError, match="placement_group_strategy.*serve_nb does not support yet"):
        deployment(placement_group_strategy="PACK")


def test_max_replicas_per_node_with_placement_group_bundles_is_refused_in_ray_serves_words():
    message = "Setting max_replicas_per_node is not allowed when placement_group_bundles is provided."
    with pytest.raises(ValueError, match=message):
        deployment(max_replicas_per_node=3, placement_group_bundles=[{"CPU": 1}])
    with pytest.raises(ValueError, match=message):
        deployment(Plain).options(max_replicas_per_node=3, placement_group_bundles=[{"CPU": 1}])


def test_route_prefix_in_decorator_points_to_serve_run():
    with pytest.raises(TypeError, match=r"route_prefix.*serve\.run\(\)"):
        deployment(route_prefix="/x")


def test_ray_serve_only_option_left_unset_is_accepted_and_changes_nothing():
    dep = deployment(Plain, logging_config=None, max_replicas_per_node=None)
    assert dep.config == deployment(Plain).config
    assert dep.options(num_replicas=2, placement_group_bundles=None).num_replicas == 2


def test_ray_serve_only_option_in_options_is_refused():
    with pytest.raises(NotImplementedError, match="placement_group_bundles"):
        deployment(Plain).options(placement_group_bundles=[{"CPU": 1}])


def test_options_typo_is_type_error_listing_valid_options():
    with pytest.raises(TypeError, match=r"'num_replica'.*Valid options: .*num_replicas"):
        deployment(Plain).options(num_replica=2)


def test_options_given_a_dict_positionally_says_to_use_keywords():
    with pytest.raises(TypeError, match=r"options as keywords"):
        deployment(Plain).options({"num_replicas": 2})


def test_options_can_replace_the_class_as_in_ray_serve():
    class Other:
        pass

    dep = deployment(Plain, num_replicas=2).options(func_or_class=Other)
    assert dep.func_or_class is Other
    assert dep.name == "Plain" and dep.num_replicas == 2


def test_invalid_option_value_raises_at_decoration():
    with pytest.raises(ValueError, match="num_replicas"):
        deployment(num_replicas=0)(Plain)


def test_decorating_a_non_callable_is_type_error():
    with pytest.raises(TypeError, match="class or a function"):
        deployment(42)


def test_decorating_a_deployment_applies_options():
    base = deployment(Plain, num_replicas=2)
    again = deployment(max_ongoing_requests=9)(base)
    assert isinstance(again, Deployment)
    assert again is not base
    assert again.func_or_class is Plain
    assert again.num_replicas == 2
    assert again.max_ongoing_requests == 9
    assert base.max_ongoing_requests == 5


# --------------------------------------------------------------------------- options()


def test_options_returns_copy_and_leaves_original_unchanged():
    original = deployment(Plain, num_replicas=2, max_ongoing_requests=3)
    copy = original.options(num_replicas=4, name="Other")
    assert copy is not original
    assert isinstance(copy, Deployment)
    assert (copy.name, copy.num_replicas, copy.max_ongoing_requests) == ("Other", 4, 3)
    assert (original.name, original.num_replicas, original.max_ongoing_requests) == ("Plain", 2, 3)
    assert copy.func_or_class is original.func_or_class


def test_options_without_name_keeps_name():
    original = deployment(Plain, name="Named")
    assert original.options(num_replicas=2).name == "Named"


def test_options_unknown_option_is_type_error():
    with pytest.raises(TypeError, match="'replicas'"):
        deployment(Plain).options(replicas=2)


def test_options_invalid_value_leaves_original_usable():
    original = deployment(Plain, num_replicas=2)
    with pytest.raises(ValueError):
        original.options(num_replicas=-1)
    assert original.num_replicas == 2


def test_options_num_replicas_replaces_autoscaling():
    auto = deployment(Plain, num_replicas="auto", autoscaling_config={"max_replicas": 5})
    assert auto.config.autoscaling_config is not None
    fixed = auto.options(num_replicas=3)
    assert fixed.num_replicas == 3
    assert fixed.config.autoscaling_config is None
    assert auto.config.autoscaling_config.max_replicas == 5  # original untouched


def test_options_num_replicas_auto_on_fixed_deployment():
    fixed = deployment(Plain, num_replicas=3)
    auto = fixed.options(num_replicas="auto")
    assert auto.num_replicas is None
    assert auto.config.autoscaling_config == AutoscalingConfig(min_replicas=1, max_replicas=100)
    assert fixed.num_replicas == 3


def test_options_autoscaling_config_on_auto_deployment_keeps_auto_defaults():
    auto = deployment(Plain, num_replicas="auto")
    changed = auto.options(autoscaling_config={"max_replicas": 5})
    assert changed.num_replicas is None
    assert changed.config.autoscaling_config.max_replicas == 5
    assert changed.config.autoscaling_config.min_replicas == 1
    assert auto.config.autoscaling_config.max_replicas == 100


def test_options_autoscaling_config_on_fixed_deployment():
    fixed = deployment(Plain, num_replicas=3)
    auto = fixed.options(autoscaling_config={"min_replicas": 1, "max_replicas": 4})
    assert auto.num_replicas is None
    assert auto.config.autoscaling_config.max_replicas == 4


def test_decorator_with_autoscaling_config_only():
    @deployment(autoscaling_config={"min_replicas": 1, "max_replicas": 4})
    class Model:
        pass

    assert Model.num_replicas is None
    assert Model.config.autoscaling_config.max_replicas == 4


def test_options_copy_not_affected_by_mutating_the_callers_dict():
    opts = {"num_cpus": 2}
    d = deployment(Plain, ray_actor_options=opts)
    opts["num_cpus"] = 4
    assert d.ray_actor_options == {"num_cpus": 2}
    assert d.options(num_replicas=2).ray_actor_options == {"num_cpus": 2}


def test_ray_actor_options_property_is_a_copy():
    d = deployment(Plain, ray_actor_options={"num_cpus": 2})
    d.ray_actor_options["num_cpus"] = 99
    assert d.ray_actor_options == {"num_cpus": 2}


# --------------------------------------------------------------------------- bind / call


def test_bind_gives_application_with_arguments():
    d = deployment(Plain)
    app = d.bind(1, "two", key=[3])
    assert isinstance(app, Application)
    assert app.deployment is d
    assert app._args == (1, "two")
    assert app._kwargs == {"key": [3]}
    assert "Plain" in repr(app)


def test_bind_twice_gives_distinct_applications():
    d = deployment(Plain)
    assert d.bind() is not d.bind()


def test_calling_a_class_deployment_directly_raises():
    d = deployment(Plain)
    with pytest.raises(RuntimeError, match=r"cannot be called or constructed directly.*Plain\.bind"):
        d()


def test_calling_a_function_deployment_directly_raises():
    @deployment
    def f(x):
        return x

    with pytest.raises(RuntimeError, match="cannot be called"):
        f(1)


# --------------------------------------------------------------------------- user_config


def test_user_config_on_class_with_reconfigure():
    d = deployment(WithReconfigure, user_config={"threshold": 0.5})
    assert d.user_config == {"threshold": 0.5}


def test_user_config_on_class_without_reconfigure_rejected():
    with pytest.raises(ValueError, match="no reconfigure"):
        deployment(Plain, user_config={"a": 1})


def test_user_config_via_options_on_class_without_reconfigure_rejected():
    d = deployment(Plain)
    with pytest.raises(ValueError, match="reconfigure"):
        d.options(user_config={"a": 1})


def test_user_config_non_callable_reconfigure_rejected():
    class Odd:
        reconfigure = 5

    with pytest.raises(ValueError, match="reconfigure"):
        deployment(Odd, user_config=1)


def test_user_config_on_function_rejected():
    with pytest.raises(ValueError, match="is a function"):
        deployment(plain_function, user_config={"a": 1})


def test_user_config_none_is_fine_anywhere():
    assert deployment(plain_function, user_config=None).user_config is None
    assert deployment(Plain, user_config=None).user_config is None


def test_user_config_must_be_json_serializable():
    with pytest.raises(ValueError, match="JSON"):
        deployment(WithReconfigure, user_config={"s": {1, 2}})


# --------------------------------------------------------------------------- Ray Serve's other spellings


def test_the_name_may_come_first_as_in_ray_serve():
    @deployment("counter", num_replicas=2)
    class Counter:
        pass

    assert Counter.name == "counter" and Counter.num_replicas == 2
    assert deployment("bare")(Counter.func_or_class).name == "bare"
    with pytest.raises(TypeError, match="both as its first argument and as name="):
        deployment("a", name="b")


def test_a_deployment_that_cannot_be_pickled_is_refused_where_it_is_defined():
    import threading

    lock = threading.Lock()

    class Holder:
        def hello(self) -> object:
            return lock

    with pytest.raises(TypeError, match=r"Could not serialize the deployment[\s\S]*was found to be non-serializable"):
        deployment(Holder)
