"""serve_nb.config: option names, DeploymentConfig.from_options, AutoscalingConfig, HTTPOptions, route prefixes."""

from __future__ import annotations

import re

import pytest

from serve_nb.config import (
    DEFAULT_MAX_ONGOING_REQUESTS,
    DEFAULT_REPLICA_NUM_CPUS,
    DEPLOYMENT_OPTIONS,
    UNSUPPORTED_RAY_SERVE_OPTIONS,
    AutoscalingConfig,
    DeploymentConfig,
    HTTPOptions,
    ProxyLocation,
    check_option_names,
    validate_route_prefix,
)


# --------------------------------------------------------------------------- check_option_names


def test_check_option_names_accepts_every_documented_option():
    check_option_names({name: None for name in DEPLOYMENT_OPTIONS})  # no exception


def test_check_option_names_unknown_option_is_type_error_naming_it():
    with pytest.raises(TypeError) as info:
        check_option_names({"num_replicas": 1, "num_replica": 2})
    msg = str(info.value)
    assert "'num_replica'" in msg
    assert "Unknown deployment option" in msg
    # lists the valid options so the user can spot the typo
    assert "num_replicas" in msg and "max_ongoing_requests" in msg


@pytest.mark.parametrize("name", UNSUPPORTED_RAY_SERVE_OPTIONS)
def test_check_option_names_ray_serve_only_options_get_their_own_message(name):
    with pytest.raises(TypeError) as info:
        check_option_names({name: object()})
    msg = str(info.value)
    assert f"'{name}'" in msg
    assert "Ray Serve option that serve_nb does not support" in msg
    assert "Unknown deployment option" not in msg


def test_check_option_names_route_prefix_points_to_serve_run():
    with pytest.raises(TypeError, match=r"serve\.run\(\)"):
        check_option_names({"route_prefix": "/x"})
    with pytest.raises(TypeError) as info:
        check_option_names({"placement_group_bundles": [{"CPU": 1}]})
    assert "serve.run" not in str(info.value)


def test_max_replicas_per_node_is_checked_as_ray_serve_checks_it():
    assert DeploymentConfig.from_options({"max_replicas_per_node": 3}).max_replicas_per_node == 3
    with pytest.raises(ValueError, match=r"Invalid max_replicas_per_node 0\. Valid values are None or an integer"):
        DeploymentConfig.from_options({"max_replicas_per_node": 0})
    with pytest.raises(TypeError, match="Expected None or an integer in the range of \\[1, 100\\]"):
        DeploymentConfig.from_options({"max_replicas_per_node": "2"})
    with pytest.raises(ValueError, match="Setting max_replicas_per_node is not allowed when placement_group_bundles"):
        check_option_names({"max_replicas_per_node": 3, "placement_group_bundles": [{"CPU": 1}]})


def test_from_options_checks_option_names_too():
    with pytest.raises(TypeError, match="bogus"):
        DeploymentConfig.from_options({"bogus": 1})


# --------------------------------------------------------------------------- defaults


def test_from_options_defaults():
    cfg = DeploymentConfig.from_options({})
    assert cfg.num_replicas == 1
    assert cfg.autoscaling_config is None
    assert cfg.max_ongoing_requests == 5 == DEFAULT_MAX_ONGOING_REQUESTS
    assert cfg.max_queued_requests == -1
    assert cfg.user_config is None
    assert cfg.ray_actor_options == {"num_cpus": 1.0}
    assert cfg.version is None
    assert cfg.initial_replicas == 1


def test_name_option_is_not_part_of_the_config():
    cfg = DeploymentConfig.from_options({"name": "Foo", "num_replicas": 2})
    assert cfg.num_replicas == 2
    assert not hasattr(cfg, "name")


# --------------------------------------------------------------------------- num_replicas


@pytest.mark.parametrize("n", [1, 2, 17])
def test_num_replicas_positive_int(n):
    cfg = DeploymentConfig.from_options({"num_replicas": n})
    assert cfg.num_replicas == n
    assert cfg.autoscaling_config is None
    assert cfg.initial_replicas == n


@pytest.mark.parametrize("n", [0, -1, -5])
def test_num_replicas_zero_or_negative_rejected(n):
    # Ray Serve rejects num_replicas=0 as well ("num_replicas is expected to larger than 0").
    with pytest.raises(ValueError, match="num_replicas"):
        DeploymentConfig.from_options({"num_replicas": n})


@pytest.mark.parametrize("n", ["3", "AUTO", "", "automatic"])
def test_num_replicas_other_strings_rejected(n):
    with pytest.raises(ValueError, match="auto"):
        DeploymentConfig.from_options({"num_replicas": n})


@pytest.mark.parametrize("n", [2.0, 1.5, True])
def test_num_replicas_non_int_rejected(n):
    with pytest.raises(ValueError, match="num_replicas"):
        DeploymentConfig.from_options({"num_replicas": n})


def test_num_replicas_none_without_autoscaling_means_one():
    cfg = DeploymentConfig.from_options({"num_replicas": None})
    assert cfg.num_replicas == 1
    assert cfg.autoscaling_config is None


def test_num_replicas_auto_uses_ray_serve_auto_defaults():
    cfg = DeploymentConfig.from_options({"num_replicas": "auto"})
    assert cfg.num_replicas is None
    auto = cfg.autoscaling_config
    assert isinstance(auto, AutoscalingConfig)
    assert auto.min_replicas == 1
    assert auto.max_replicas == 100
    assert auto.target_ongoing_requests == 2.0
    assert cfg.initial_replicas == 1


def test_num_replicas_auto_with_autoscaling_overrides():
    cfg = DeploymentConfig.from_options(
        {"num_replicas": "auto", "autoscaling_config": {"max_replicas": 7, "initial_replicas": 3}}
    )
    assert cfg.num_replicas is None
    assert cfg.autoscaling_config.min_replicas == 1  # auto default kept
    assert cfg.autoscaling_config.max_replicas == 7  # user value wins
    assert cfg.autoscaling_config.initial_replicas == 3
    assert cfg.initial_replicas == 3


def test_num_replicas_auto_with_bad_autoscaling_key_rejected():
    with pytest.raises(ValueError, match="max_replica"):
        DeploymentConfig.from_options({"num_replicas": "auto", "autoscaling_config": {"max_replica": 3}})


def test_num_replicas_none_with_autoscaling_config():
    cfg = DeploymentConfig.from_options(
        {"num_replicas": None, "autoscaling_config": {"min_replicas": 2, "max_replicas": 4}}
    )
    assert cfg.num_replicas is None
    assert cfg.autoscaling_config == AutoscalingConfig(min_replicas=2, max_replicas=4)
    assert cfg.initial_replicas == 2


def test_autoscaling_config_without_num_replicas_is_accepted():
    cfg = DeploymentConfig.from_options({"autoscaling_config": {"min_replicas": 1, "max_replicas": 3}})
    assert cfg.num_replicas is None
    assert cfg.autoscaling_config.max_replicas == 3


def test_num_replicas_int_and_autoscaling_config_together_rejected():
    with pytest.raises(ValueError, match="not both"):
        DeploymentConfig.from_options({"num_replicas": 2, "autoscaling_config": {"max_replicas": 3}})


def test_autoscaling_config_instance_is_accepted_as_is():
    auto = AutoscalingConfig(min_replicas=0, max_replicas=5, initial_replicas=2)
    cfg = DeploymentConfig.from_options({"num_replicas": None, "autoscaling_config": auto})
    assert cfg.autoscaling_config is auto
    assert cfg.initial_replicas == 2


def test_autoscaling_config_wrong_type_is_type_error():
    with pytest.raises(TypeError, match="autoscaling_config"):
        DeploymentConfig.from_options({"num_replicas": None, "autoscaling_config": [("max_replicas", 3)]})


# --------------------------------------------------------------------------- AutoscalingConfig


def test_autoscaling_unknown_keys_listed_sorted():
    with pytest.raises(ValueError) as info:
        AutoscalingConfig.from_user({"zeta": 1, "alpha": 2, "max_replicas": 3})
    msg = str(info.value)
    assert "alpha, zeta" in msg
    assert "min_replicas" in msg  # valid keys listed


def test_autoscaling_from_user_without_auto_uses_dataclass_defaults():
    auto = AutoscalingConfig.from_user({})
    assert (auto.min_replicas, auto.max_replicas, auto.initial_replicas) == (1, 1, None)
    assert auto.start_replicas == 1


@pytest.mark.parametrize(
    "kw",
    [
        {"min_replicas": 3, "max_replicas": 2},
        {"min_replicas": 1, "max_replicas": 4, "initial_replicas": 5},
        {"min_replicas": 2, "max_replicas": 4, "initial_replicas": 1},
        {"min_replicas": -1, "max_replicas": 4},
        {"min_replicas": 0, "max_replicas": 0},
        {"max_replicas": 2.0},
        {"min_replicas": True, "max_replicas": 2},
        {"max_replicas": 2, "target_ongoing_requests": 0},
        {"max_replicas": 2, "target_ongoing_requests": -1.0},
        {"max_replicas": 2, "target_ongoing_requests": float("inf")},
        {"max_replicas": 2, "upscale_delay_s": -1},
        {"max_replicas": 2, "downscale_delay_s": "10"},
        {"max_replicas": 2, "upscaling_factor": 0},
        {"max_replicas": 2, "metrics_interval_s": 0},
        {"max_replicas": 2, "look_back_period_s": 0},
        {"max_replicas": 2, "downscale_to_zero_delay_s": -1},
    ],
)
def test_autoscaling_invalid_values_rejected(kw):
    with pytest.raises(ValueError, match="autoscaling_config"):
        AutoscalingConfig.from_user(kw)


@pytest.mark.parametrize(
    "kw, start",
    [
        ({"min_replicas": 0, "max_replicas": 1}, 0),
        ({"min_replicas": 2, "max_replicas": 2}, 2),
        ({"min_replicas": 1, "max_replicas": 5, "initial_replicas": 1}, 1),
        ({"min_replicas": 1, "max_replicas": 5, "initial_replicas": 5}, 5),
        ({"min_replicas": 0, "max_replicas": 5, "initial_replicas": 0}, 0),
        ({"min_replicas": 2, "max_replicas": 5, "initial_replicas": 3}, 3),
    ],
)
def test_autoscaling_min_le_initial_le_max_boundaries_accepted(kw, start):
    auto = AutoscalingConfig.from_user(kw)
    assert auto.start_replicas == start


def test_autoscaling_to_dict_round_trips():
    auto = AutoscalingConfig.from_user({"min_replicas": 2, "max_replicas": 6, "upscale_delay_s": 1.5})
    d = auto.to_dict()
    assert d["min_replicas"] == 2 and d["upscale_delay_s"] == 1.5
    assert AutoscalingConfig(**d) == auto


# --------------------------------------------------------------------------- max_ongoing / max_queued


@pytest.mark.parametrize("value", [1, 100])
def test_max_ongoing_requests_valid(value):
    assert DeploymentConfig.from_options({"max_ongoing_requests": value}).max_ongoing_requests == value


@pytest.mark.parametrize("value", [0, -1, 2.5, "5", True, None])
def test_max_ongoing_requests_invalid(value):
    with pytest.raises(ValueError, match="max_ongoing_requests"):
        DeploymentConfig.from_options({"max_ongoing_requests": value})


@pytest.mark.parametrize("value", [-1, 1, 1000])
def test_max_queued_requests_valid(value):
    assert DeploymentConfig.from_options({"max_queued_requests": value}).max_queued_requests == value


@pytest.mark.parametrize("value", [0, -2, 1.0, "1", True, None])
def test_max_queued_requests_invalid(value):
    with pytest.raises(ValueError, match="max_queued_requests"):
        DeploymentConfig.from_options({"max_queued_requests": value})


# --------------------------------------------------------------------------- user_config


@pytest.mark.parametrize("value", [{"a": [1, 2, {"b": None}]}, [1, "x"], 3, "s", 1.5, True])
def test_user_config_json_serializable_kept(value):
    assert DeploymentConfig.from_options({"user_config": value}).user_config == value


@pytest.mark.parametrize("value", [{1, 2}, {"f": object()}, {(1, 2): "tuple key"}, b"bytes"])
def test_user_config_not_json_serializable_rejected(value):
    with pytest.raises(ValueError, match="user_config must be JSON-serializable"):
        DeploymentConfig.from_options({"user_config": value})


def test_user_config_circular_rejected():
    loop: dict = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match="user_config"):
        DeploymentConfig.from_options({"user_config": loop})


# --------------------------------------------------------------------------- ray_actor_options


def test_ray_actor_options_default_one_cpu_when_not_given():
    assert DeploymentConfig.from_options({}).ray_actor_options == {"num_cpus": DEFAULT_REPLICA_NUM_CPUS}
    assert DeploymentConfig.from_options({"ray_actor_options": None}).ray_actor_options == {"num_cpus": 1.0}


def test_ray_actor_options_default_num_cpus_added_to_other_keys():
    cfg = DeploymentConfig.from_options({"ray_actor_options": {"num_gpus": 1, "resources": {"x": 2}}})
    assert cfg.ray_actor_options == {"num_gpus": 1, "resources": {"x": 2}, "num_cpus": 1.0}


def test_ray_actor_options_explicit_num_cpus_kept():
    assert DeploymentConfig.from_options({"ray_actor_options": {"num_cpus": 0.5}}).ray_actor_options == {
        "num_cpus": 0.5
    }
    assert DeploymentConfig.from_options({"ray_actor_options": {"num_cpus": 0}}).ray_actor_options == {
        "num_cpus": 0
    }


def test_ray_actor_options_are_copied_not_aliased():
    opts = {"num_gpus": 1}
    cfg = DeploymentConfig.from_options({"ray_actor_options": opts})
    assert opts == {"num_gpus": 1}  # caller's dict not modified by the default fill-in
    opts["num_gpus"] = 4
    assert cfg.ray_actor_options["num_gpus"] == 1


def test_ray_actor_options_unknown_keys_value_error():
    with pytest.raises(ValueError) as info:
        DeploymentConfig.from_options({"ray_actor_options": {"num_cpus": 1, "max_restarts": 3, "name": "x"}})
    msg = str(info.value)
    assert "max_restarts, name" in msg
    assert "num_gpus" in msg  # valid keys are listed


@pytest.mark.parametrize(
    "opts",
    [
        {"num_cpus": -1},
        {"num_gpus": "1"},
        {"memory": float("nan")},
        {"resources": {"x": -1}},
        {"resources": ["x"]},
        {"resources": {1: 1}},
        {"runtime_env": "env"},
        {"accelerator_type": 3},
    ],
)
def test_ray_actor_options_bad_values(opts):
    with pytest.raises(ValueError, match="ray_actor_options"):
        DeploymentConfig.from_options({"ray_actor_options": opts})


def test_ray_actor_options_wrong_type():
    with pytest.raises(TypeError, match="ray_actor_options must be a dict"):
        DeploymentConfig.from_options({"ray_actor_options": [("num_cpus", 1)]})


# --------------------------------------------------------------------------- timeouts and version


@pytest.mark.parametrize("name", ["health_check_period_s", "health_check_timeout_s"])
def test_health_check_times_must_be_positive(name):
    assert getattr(DeploymentConfig.from_options({name: 3}), name) == 3.0
    with pytest.raises(ValueError, match=name):
        DeploymentConfig.from_options({name: 0})
    with pytest.raises(ValueError, match=name):
        DeploymentConfig.from_options({name: -1})


@pytest.mark.parametrize("name", ["graceful_shutdown_timeout_s", "graceful_shutdown_wait_loop_s"])
def test_graceful_shutdown_times_may_be_zero(name):
    assert getattr(DeploymentConfig.from_options({name: 0}), name) == 0.0
    with pytest.raises(ValueError, match=name):
        DeploymentConfig.from_options({name: -0.1})


def test_version_must_be_string():
    assert DeploymentConfig.from_options({"version": "v1"}).version == "v1"
    with pytest.raises(TypeError, match="version must be a string"):
        DeploymentConfig.from_options({"version": 1})


# --------------------------------------------------------------------------- HTTPOptions


def test_http_options_none_gives_defaults():
    opts = HTTPOptions.from_user(None)
    assert opts == HTTPOptions()
    assert (opts.host, opts.port, opts.location) == ("127.0.0.1", 8000, "EveryNode")


def test_http_options_instance_returned_as_is():
    opts = HTTPOptions(port=9000)
    assert HTTPOptions.from_user(opts) is opts


def test_http_options_from_dict():
    opts = HTTPOptions.from_user({"host": "0.0.0.0", "port": 0, "location": "HeadOnly", "request_timeout_s": 2})
    assert (opts.host, opts.port, opts.location, opts.request_timeout_s) == ("0.0.0.0", 0, "HeadOnly", 2)
    assert HTTPOptions.from_user({"port": 65535}).port == 65535


@pytest.mark.parametrize("location", list(ProxyLocation))
def test_http_options_location_string_or_member_becomes_the_member(location):
    by_string = HTTPOptions.from_user({"location": location.value})
    by_member = HTTPOptions.from_user({"location": location})
    assert by_string == by_member == HTTPOptions(location=location.value)
    assert by_string.location is location
    assert by_string.location == location.value  # users comparing with strings still work
    assert str(by_string.location) == location.value


def test_proxy_location_values_are_the_strings_users_pass():
    assert [loc.value for loc in ProxyLocation] == ["EveryNode", "HeadOnly", "NoServer"]
    assert HTTPOptions().location is ProxyLocation.EveryNode


def test_http_options_bad_location_lists_the_valid_ones():
    with pytest.raises(ValueError, match="'EveryNode', 'HeadOnly', 'NoServer', got 'Everywhere'"):
        HTTPOptions(location="Everywhere")


def test_http_options_unknown_keys_value_error():
    with pytest.raises(ValueError, match="Unknown http_options key.*prot"):
        HTTPOptions.from_user({"prot": 8000})


def test_http_options_wrong_type():
    with pytest.raises(TypeError, match="http_options"):
        HTTPOptions.from_user("127.0.0.1:8000")


@pytest.mark.parametrize(
    "kw",
    [
        {"port": 65536},
        {"port": -1},
        {"port": "8000"},
        {"host": ""},
        {"host": None},
        {"location": "Everywhere"},
        {"request_timeout_s": 0},
    ],
)
def test_http_options_invalid_values(kw):
    with pytest.raises(ValueError, match="http_options"):
        HTTPOptions.from_user(kw)


# --------------------------------------------------------------------------- route prefixes


@pytest.mark.parametrize(
    "prefix",
    [None, "/", "/api", "/api/v1", "/a-b_c.d~e", "/v1:predict", "/caf\u00e9", "/x!$&'()*+,;=@", "/.well-known"],
)
def test_validate_route_prefix_returns_a_reachable_prefix_unchanged(prefix):
    assert validate_route_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["api", "", "api/", 5])
def test_validate_route_prefix_must_start_with_a_slash(prefix):
    with pytest.raises(ValueError, match=r"Invalid route_prefix '.*', must start with a forward slash \('/'\)\."):
        validate_route_prefix(prefix)


@pytest.mark.parametrize("prefix, suggestion", [("/api/", "'/api'"), ("/api/v1//", "'/api/v1'"), ("//", "'/'")])
def test_validate_route_prefix_refuses_a_trailing_slash_instead_of_rewriting_it(prefix, suggestion):
    # Ray Serve raises here too; "//" used to become "/", the catch-all, silently.
    with pytest.raises(ValueError, match=f"Invalid route_prefix '{prefix}', may not end with a trailing '/'\\.") as info:
        validate_route_prefix(prefix)
    assert f"use {suggestion}" in str(info.value)


@pytest.mark.parametrize("prefix", ["/{id}", "/a/{b}", "/a}"])
def test_validate_route_prefix_refuses_wildcards(prefix):
    with pytest.raises(ValueError, match=f"Invalid route_prefix '{re.escape(prefix)}', may not contain wildcards\\."):
        validate_route_prefix(prefix)


@pytest.mark.parametrize(
    "prefix, named",
    [
        ("/a b?#", ["' ' (space)", "'?'", "'#'", "query string", "fragment"]),
        ("/a\tb", ["non-printing character U+0009"]),
        ("/a\x00", ["U+0000"]),
        ("/a\x7f", ["U+007F"]),
        ("/100%", ["'%'", "escape"]),
        ("/a%2", ["'%'"]),
        ("/a%20b", ["'%'", "write the character itself"]),
        ("/a\\b", ["'\\\\'"]),
        ("/a<b>", ["'<'", "'>'"]),
        ("/a|b", ["'|'"]),
        ("/a\u00a0b", ["'\\xa0'"]),
    ],
)
def test_validate_route_prefix_names_characters_not_valid_in_a_url_path(prefix, named):
    with pytest.raises(ValueError, match="not valid in a URL path") as info:
        validate_route_prefix(prefix)
    for text in named:
        assert text in str(info.value)


@pytest.mark.parametrize("prefix", ["/.", "/..", "/a/../b", "/a/."])
def test_validate_route_prefix_refuses_dot_segments_clients_resolve_away(prefix):
    with pytest.raises(ValueError, match="'..' segments"):
        validate_route_prefix(prefix)
