"""Ray Serve's config file format, read and checked by serve_nb.core.deploy_schema before anything is deployed:
files from Ray Serve's documentation read unchanged, every mistake is named with its file, line and field, and
what is read can be merged with the code's options and written back."""

from __future__ import annotations

import datetime
import textwrap

import pytest

from serve_nb.config import AutoscalingConfig, DeploymentConfig, HTTPOptions, ProxyLocation
from serve_nb.core.deploy_schema import (
    AppConfig,
    ConfigError,
    DeployConfig,
    DeploymentOverride,
    check_deployment_names,
    load_config,
    merge_options,
)
from serve_nb.core.deploy_dump import build_config_text, dump_config
from serve_nb.core.route_prefix import validate_route_prefix


def load(text: str) -> DeployConfig:
    return load_config(textwrap.dedent(text), "serve_config.yaml")


def problems(text: str) -> list[str]:
    """The lines of the ConfigError ``text`` raises (one per problem)."""
    with pytest.raises(ConfigError) as info:
        load(text)
    lines = str(info.value).splitlines()
    assert len(lines) == len(info.value.problems)
    return lines


def problem(text: str) -> str:
    """The one problem of ``text``."""
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def with_deployment(options: str) -> str:
    """A one-app config whose one deployment override has ``options`` (YAML lines, from line 5 on)."""
    body = textwrap.indent(textwrap.dedent(options), "    ")
    return f"applications:\n- import_path: app:app\n  deployments:\n  - name: Model\n{body}"


def from_options_error(options: dict) -> str:
    """What ``@serve.deployment(**options)`` says about ``options``."""
    with pytest.raises((TypeError, ValueError)) as info:
        DeploymentConfig.from_options(options)
    return str(info.value)


# --------------------------------------------------------------------------- files from Ray Serve's documentation

#: "Serve Config Files" (doc/source/serve/production-guide/config.md), the Text ML Model example, verbatim.
TEXT_ML = """\
proxy_location: EveryNode

http_options:
  host: 0.0.0.0
  port: 8000

applications:
- name: default
  route_prefix: /
  import_path: text_ml:app
  runtime_env:
    pip:
      - torch
      - transformers
  deployments:
  - name: Translator
    num_replicas: 1
    user_config:
      language: french
  - name: Summarizer
    num_replicas: 1
"""

#: KubeRay's RayService sample (ray-operator/config/samples/ray-service.sample.yaml), its serveConfigV2
#: verbatim: the fruit stand and the math app, the config Ray Serve's Kubernetes guide deploys.
FRUIT_AND_MATH = """\
applications:
  - name: fruit_app
    import_path: fruit.deployment_graph
    route_prefix: /fruit
    runtime_env:
      working_dir: "https://github.com/ray-project/test_dag/archive/78b4a5da38796123d9f9ffff59bab2792a043e95.zip"
    deployments:
      - name: MangoStand
        num_replicas: 2
        max_replicas_per_node: 1
        user_config:
          price: 3
        ray_actor_options:
          num_cpus: 0.1
      - name: OrangeStand
        num_replicas: 1
        user_config:
          price: 2
        ray_actor_options:
          num_cpus: 0.1
      - name: PearStand
        num_replicas: 1
        user_config:
          price: 1
        ray_actor_options:
          num_cpus: 0.1
      - name: FruitMarket
        num_replicas: 1
        ray_actor_options:
          num_cpus: 0.1
  - name: math_app
    import_path: conditional_dag.serve_dag
    route_prefix: /calc
    runtime_env:
      working_dir: "https://github.com/ray-project/test_dag/archive/78b4a5da38796123d9f9ffff59bab2792a043e95.zip"
    deployments:
      - name: Adder
        num_replicas: 1
        user_config:
          increment: 3
        ray_actor_options:
          num_cpus: 0.1
      - name: Multiplier
        num_replicas: 1
        user_config:
          factor: 5
        ray_actor_options:
          num_cpus: 0.1
      - name: Router
        num_replicas: 1
"""

#: The autoscaling guide's ResNet50 example (doc/source/serve/autoscaling-guide.md, YAML tab), verbatim.
RESNET = """\
applications:
  - name: default
    import_path: resnet:app
    deployments:
    - name: Model
      max_ongoing_requests: 5
      autoscaling_config:
        target_ongoing_requests: 1
        min_replicas: 0
        initial_replicas: 0
        max_replicas: 200
"""

#: What Ray 2.60's ``serve build text_ml:app`` wrote for an app whose Translator has num_replicas="auto",
#: verbatim (note ``num_replicas: null`` beside ``autoscaling_config``, and the gRPC and logging defaults).
SERVE_BUILD_2_60 = """\
# This file was generated using the `serve build` command on Ray v2.60.0.

proxy_location: EveryNode

http_options:
  host: 0.0.0.0
  port: 8000

grpc_options:
  port: 9000
  grpc_servicer_functions: []
  enable_reflection: true

logging_config:
  encoding: TEXT
  log_level: INFO
  logs_dir: null
  enable_access_log: true
  additional_log_standard_attrs: []

applications:
- name: app1
  route_prefix: /
  import_path: text_ml:app
  runtime_env: {}
  deployments:
  - name: Translator
    num_replicas: null
    user_config:
      language: french
    autoscaling_config:
      min_replicas: 1
      max_replicas: 100
      target_ongoing_requests: 2.0
    ray_actor_options:
      num_cpus: 0.5
  - name: Plain
    max_ongoing_requests: 7
    health_check_period_s: 3.0
  - name: Summarizer
    autoscaling_config:
      min_replicas: 1
      max_replicas: 3
"""


def test_the_text_ml_config_of_ray_serves_config_file_page_reads_unchanged():
    assert load(TEXT_ML) == DeployConfig(
        proxy_location=ProxyLocation.EveryNode,
        http_options={"host": "0.0.0.0", "port": 8000},
        logging_config=None,
        applications=(AppConfig(
            name="default", route_prefix="/", import_path="text_ml:app", args={},
            runtime_env={"pip": ["torch", "transformers"]},
            deployments=(DeploymentOverride("Translator", {"num_replicas": 1, "user_config": {"language": "french"}}),
                         DeploymentOverride("Summarizer", {"num_replicas": 1})),
        ),),
    )


def test_every_value_keeps_the_line_it_was_written_on():
    app = load(TEXT_ML).applications[0]
    assert (app.line, app.deployments[0].line, app.deployments[1].line) == (8, 16, 20)


def test_the_fruit_stand_and_math_apps_of_kuberays_sample_read_unchanged():
    fruit, math = load(FRUIT_AND_MATH).applications
    assert (fruit.name, fruit.route_prefix, fruit.import_path) == ("fruit_app", "/fruit", "fruit.deployment_graph")
    assert (math.name, math.route_prefix, math.import_path) == ("math_app", "/calc", "conditional_dag.serve_dag")
    assert fruit.runtime_env["working_dir"].startswith("https://github.com/ray-project/test_dag/archive/")
    assert [d.name for d in fruit.deployments] == ["MangoStand", "OrangeStand", "PearStand", "FruitMarket"]
    assert fruit.deployments[0].options == {"num_replicas": 2, "max_replicas_per_node": 1, "user_config": {"price": 3},
                                            "ray_actor_options": {"num_cpus": 0.1}}
    assert math.deployments[-1] == DeploymentOverride("Router", {"num_replicas": 1})


def test_the_resnet_autoscaling_config_of_the_autoscaling_guide_reads_and_autoscales_from_zero():
    model = load(RESNET).applications[0].deployments[0]
    config = DeploymentConfig.from_options(merge_options({}, model))
    assert config.autoscaling_config == AutoscalingConfig(min_replicas=0, initial_replicas=0, max_replicas=200,
                                                          target_ongoing_requests=1)
    assert config.max_ongoing_requests == 5


def test_what_ray_serves_own_serve_build_writes_reads_unchanged():
    config = load(SERVE_BUILD_2_60)
    assert config.logging_config == {"encoding": "TEXT", "log_level": "INFO", "logs_dir": None,
                                     "enable_access_log": True, "additional_log_standard_attrs": []}
    translator, plain, summarizer = config.applications[0].deployments
    assert DeploymentConfig.from_options(merge_options({"num_replicas": "auto"}, translator)).autoscaling_config \
        == AutoscalingConfig(min_replicas=1, max_replicas=100, target_ongoing_requests=2.0)
    assert plain.options == {"max_ongoing_requests": 7, "health_check_period_s": 3.0}
    assert summarizer.options == {"autoscaling_config": {"min_replicas": 1, "max_replicas": 3}}


def test_a_json_config_reads_as_yaml():
    config = load('{"applications": [{"name": "a", "import_path": "m:app", "route_prefix": null}]}')
    assert config.applications[0].route_prefix is None


# --------------------------------------------------------------------------- defaults


def test_an_application_gets_ray_serves_defaults():
    config = load("applications:\n- import_path: m.sub:app\n")
    assert config == DeployConfig(None, {}, None, (AppConfig("default", "/", "m.sub:app", {}, {}, ()),))


def test_route_prefix_null_serves_the_application_without_http():
    assert load("applications:\n- import_path: m:app\n  route_prefix: null\n").applications[0].route_prefix is None


@pytest.mark.parametrize(("written", "location"), [
    ("EveryNode", ProxyLocation.EveryNode), ("HeadOnly", ProxyLocation.HeadOnly),
    ("Disabled", ProxyLocation.NoServer), ("NoServer", ProxyLocation.NoServer),
])
def test_proxy_location_takes_ray_serves_names_and_serve_nbs(written, location):
    assert load(f"proxy_location: {written}\napplications: [{{import_path: m:app}}]").proxy_location is location


def test_serve_nbs_own_http_options_are_read_too():
    config = load("http_options: {max_body_bytes: 1024, retry_safe_methods: true}\napplications: [{import_path: m:a}]")
    assert config.http_options == {"max_body_bytes": 1024, "retry_safe_methods": True}


# --------------------------------------------------------------------------- mistakes: where, and what to do


def test_num_replicas_beside_autoscaling_config_is_named_with_its_file_line_and_field():
    text = """\
    applications:
    - name: first
      import_path: a:app
      route_prefix: /a
    - name: second
      import_path: b:app
      deployments:
      - name: Other
      - name: Model
        autoscaling_config:
          max_replicas: 4
        num_replicas: 2
    """
    assert problem(text) == ("serve_config.yaml:12: applications[1].deployments[1].num_replicas: num_replicas and "
                             "autoscaling_config cannot both be set; remove one. (num_replicas: auto autoscales with "
                             "the settings in autoscaling_config.)")


@pytest.mark.parametrize("replicas", ["auto", "null"])
def test_auto_or_null_num_replicas_may_go_with_autoscaling_config(replicas):
    load(with_deployment(f"num_replicas: {replicas}\nautoscaling_config: {{min_replicas: 2, max_replicas: 5}}"))


def test_every_problem_of_a_file_comes_at_once_in_line_order_one_line_each():
    found = problems("""\
    applications:
    - import_path: nodots
      deployments:
      - name: A
        num_replica: 2
      - name: A
    """)
    assert [line.split(": ")[0] for line in found] == [f"serve_config.yaml:{line}" for line in (2, 5, 6)]


@pytest.mark.parametrize(("text", "expected"), [
    ("applications: [{import_path: m:a}]\naplications: []", "serve_config.yaml:2: aplications: unknown field "
     "'aplications' in the top-level settings. Did you mean 'applications'?"),
    ("http_options: {prot: 8000}\napplications: [{import_path: m:a}]", "serve_config.yaml:1: http_options.prot: "
     "unknown field 'prot' in the HTTP options. Did you mean 'port'?"),
    ("applications:\n- import_path: m:a\n  deploymnets: []", "serve_config.yaml:3: applications[0].deploymnets: "
     "unknown field 'deploymnets' in the application settings. Did you mean 'deployments'?"),
    (with_deployment("num_replica: 4"), "serve_config.yaml:5: applications[0].deployments[0].num_replica: unknown "
     "field 'num_replica' in the deployment options. Did you mean 'num_replicas'?"),
    (with_deployment("autoscaling_config:\n  max_replica: 4"), "serve_config.yaml:6: "
     "applications[0].deployments[0].autoscaling_config.max_replica: unknown field 'max_replica' in the autoscaling "
     "settings. Did you mean 'max_replicas'?"),
    (with_deployment("ray_actor_options: {num_gpu: 1}"), "serve_config.yaml:5: "
     "applications[0].deployments[0].ray_actor_options.num_gpu: unknown field 'num_gpu' in the Ray actor options. "
     "Did you mean 'num_gpus'?"),
])
def test_an_unknown_field_is_named_with_the_closest_valid_one(text, expected):
    found = problem(text)
    assert found.startswith(expected)
    assert "Valid fields: " in found


def test_an_unknown_field_far_from_any_valid_one_lists_the_valid_ones():
    found = problem(with_deployment("colour: blue"))
    assert "Did you mean" not in found
    assert found.endswith("Valid fields: name, num_replicas, ray_actor_options, max_ongoing_requests, "
                          "max_queued_requests, user_config, logging_config, autoscaling_config, health_check_period_s, "
                          "health_check_timeout_s, graceful_shutdown_timeout_s, graceful_shutdown_wait_loop_s, "
                          "initialization_timeout_s, max_replicas_per_node.")


@pytest.mark.parametrize(("options", "line", "field", "as_code"), [
    ("num_replicas: 0", 5, "num_replicas", {"num_replicas": 0}),
    ("num_replicas: many", 5, "num_replicas", {"num_replicas": "many"}),
    ("max_ongoing_requests: 0", 5, "max_ongoing_requests", {"max_ongoing_requests": 0}),
    ("max_queued_requests: 0", 5, "max_queued_requests", {"max_queued_requests": 0}),
    ("health_check_period_s: -1", 5, "health_check_period_s", {"health_check_period_s": -1}),
    ("max_replicas_per_node: 101", 5, "max_replicas_per_node", {"max_replicas_per_node": 101}),
    ("user_config: {since: 2024-01-01}", 5, "user_config", {"user_config": {"since": datetime.date(2024, 1, 1)}}),
    ("ray_actor_options:\n  num_gpus: -1", 5, "ray_actor_options", {"ray_actor_options": {"num_gpus": -1}}),
    ("autoscaling_config:\n  min_replicas: 3\n  max_replicas: 2", 5, "autoscaling_config",
     {"autoscaling_config": {"min_replicas": 3, "max_replicas": 2}}),
])
def test_a_bad_option_value_gets_the_words_of_serve_deployment(options, line, field, as_code):
    assert problem(with_deployment(options)) == (f"serve_config.yaml:{line}: applications[0].deployments[0].{field}: "
                                                 f"{from_options_error(as_code)}")


def test_a_bad_http_option_gets_the_words_of_http_options():
    with pytest.raises(ValueError) as info:
        HTTPOptions(port=70000)
    text = "http_options:\n  host: 0.0.0.0\n  port: 70000\napplications: [{import_path: m:a}]"
    assert problem(text) == f"serve_config.yaml:3: http_options.port: {info.value}"


def test_two_applications_with_one_name_are_refused_at_the_second():
    text = """\
    applications:
    - name: shop
      import_path: a:app
      route_prefix: /a
    - name: shop
      import_path: b:app
      route_prefix: /b
    """
    assert problem(text) == ("serve_config.yaml:5: applications[1].name: application name 'shop' is already used by "
                             "applications[0] (line 2). Give each application its own name.")


def test_two_applications_on_one_route_prefix_are_refused_even_when_it_is_the_default():
    text = """\
    applications:
    - name: a
      import_path: a:app
    - name: b
      import_path: b:app
    """
    assert problem(text).startswith("serve_config.yaml:4: applications[1].route_prefix: route prefix '/' (the "
                                    "default, as none is given) is already used by application 'a' (line 2).")


def test_many_applications_may_go_without_http():
    load("applications:\n- {name: a, import_path: a:app, route_prefix: null}\n"
         "- {name: b, import_path: b:app, route_prefix: null}\n")


@pytest.mark.parametrize("prefix", ["/api/", "api", "/a b", "/{id}"])
def test_a_route_prefix_no_request_could_reach_gets_serve_runs_words(prefix):
    with pytest.raises(ValueError) as info:
        validate_route_prefix(prefix)  # the rules serve.run applies
    text = f"applications:\n- import_path: m:app\n  route_prefix: '{prefix}'\n"
    assert problem(text) == f"serve_config.yaml:3: applications[0].route_prefix: {info.value}"


@pytest.mark.parametrize("path", ["text_ml:app", "text_ml.app", "pkg.sub.module:app", "pkg.sub.app"])
def test_an_import_path_names_a_module_and_an_attribute(path):
    assert load(f"applications: [{{import_path: '{path}'}}]").applications[0].import_path == path


@pytest.mark.parametrize("path", ["text_ml", "a:b:c", ":app", "mod:", "mod.", ".app", "my-mod:app", "m:app.x", "3"])
def test_an_import_path_ray_serve_could_not_follow_is_refused(path):
    found = problem(f"applications:\n- import_path: '{path}'\n")
    assert found.startswith("serve_config.yaml:2: applications[0].import_path: ")


def test_an_application_without_import_path_is_refused():
    assert problem("applications:\n- name: a\n").startswith(
        "serve_config.yaml:2: applications[0].import_path: missing: every application names")


def test_one_deployment_overridden_twice_is_refused_at_the_second():
    text = with_deployment("num_replicas: 1") + "\n  - name: Model\n    num_replicas: 2\n"
    assert problem(text) == ("serve_config.yaml:6: applications[0].deployments[1].name: deployment 'Model' is also "
                             "overridden on line 4. Merge the two entries into one.")


def test_a_deployment_override_without_name_is_refused():
    text = "applications:\n- import_path: m:app\n  deployments:\n  - num_replicas: 2\n"
    assert problem(text).startswith("serve_config.yaml:4: applications[0].deployments[0].name: missing")


@pytest.mark.parametrize(("text", "expected"), [
    ("applications:\n- import_path: m:app\n  import_path: n:app\n", "serve_config.yaml:3: applications[0].import_path: "
     "given twice (also on line 2)"),
    (with_deployment("user_config:\n  price: 3\n  price: 4"), "serve_config.yaml:7: "
     "applications[0].deployments[0].user_config.price: given twice (also on line 6)"),
])
def test_a_key_given_twice_is_refused_rather_than_silently_dropped(text, expected):
    assert problem(text).startswith(expected)


def test_a_key_that_is_not_a_name_is_refused():
    assert problem("applications: [{import_path: m:a}]\n3: x\n").startswith("serve_config.yaml:2: keys must be names")


@pytest.mark.parametrize("args", ["!!python/object/apply:os.system ['true']", "&x {a: *x}"])
def test_a_value_safe_loading_cannot_build_is_refused(args):
    found = problem(f"applications:\n- import_path: m:app\n  args: {args}\n")
    assert found.startswith("serve_config.yaml:3: applications[0].args: cannot be read: ")


@pytest.mark.timeout(5)  # walking every path instead of every node takes minutes here
def test_nested_aliases_are_read_without_walking_every_path():
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 8)]  # 9**8 paths to the leaves
    args = "\n".join(f"    {level}" for level in levels)
    assert load(f"applications:\n- import_path: m:app\n  args:\n{args}\n").applications[0].args["a7"][0][0][0]


def test_yaml_merge_keys_apply_and_a_mistake_inside_points_at_the_anchor():
    config = load("""\
    applications:
    - import_path: m:app
      deployments:
      - &small {name: A, num_replicas: 1, ray_actor_options: {num_cpus: 0.5}}
      - {<<: *small, name: B, num_replicas: 2}
    """)
    assert config.applications[0].deployments[1] == DeploymentOverride(
        "B", {"num_replicas": 2, "ray_actor_options": {"num_cpus": 0.5}})
    found = problems("applications:\n- import_path: m:app\n  deployments:\n  - &d {name: A, num_replica: 1}\n"
                     "  - {<<: *d, name: B}\n")
    assert found[0].startswith("serve_config.yaml:4: applications[0].deployments[0].num_replica: unknown field")
    assert found[1].startswith("serve_config.yaml:4: applications[0].deployments[1].num_replica: unknown field")


@pytest.mark.parametrize(("text", "expected"), [
    ("", "serve_config.yaml:1: the file is empty."),
    ("applications: [\n", "serve_config.yaml:2: not valid YAML: "),
    ("- import_path: m:app\n", "serve_config.yaml:1: must be a mapping of top-level settings, got a list."),
    ("proxy_location: EveryNode\n", "serve_config.yaml:1: applications: missing: list the applications to deploy"),
    ("applications: []\n", "serve_config.yaml:1: applications: is empty: list at least one application."),
    ("applications: text_ml:app\n", "serve_config.yaml:1: applications: must be a list of applications, got "
     "'text_ml:app'."),
    ("proxy_location: Everynode\napplications: [{import_path: m:a}]", "serve_config.yaml:1: proxy_location: must be "
     "one of EveryNode, HeadOnly, Disabled (got 'Everynode'). Did you mean 'EveryNode'?"),
    ("applications:\n- import_path: m:a\n  args: [1, 2]\n", "serve_config.yaml:3: applications[0].args: must be a "
     "mapping"),
])
def test_a_file_that_is_not_a_serve_config_says_why(text, expected):
    assert problem(text).startswith(expected)


@pytest.mark.parametrize(("text", "expected"), [
    ("import_path: text_ml:app\n", "serve_config.yaml:1: import_path: belongs to one application: Ray Serve's "
     "single-application format is no longer read."),
    ("applications:\n- import_path: m:a\n  port: 8001\n", "serve_config.yaml:3: applications[0].port: host and port "
     "are the same for every application: set them under the top-level http_options."),
    ("http_options: {location: HeadOnly}\napplications: [{import_path: m:a}]", "serve_config.yaml:1: "
     "http_options.location: set the top-level proxy_location instead"),
    (with_deployment("route_prefix: /x"), "serve_config.yaml:5: applications[0].deployments[0].route_prefix: set "
     "route_prefix on the application"),
    (with_deployment("version: v2"), "serve_config.yaml:5: applications[0].deployments[0].version: Ray Serve's config "
     "files have no version"),
    (with_deployment("max_concurrent_queries: 10"), "serve_config.yaml:5: "
     "applications[0].deployments[0].max_concurrent_queries: renamed max_ongoing_requests"),
])
def test_a_field_that_belongs_elsewhere_says_where(text, expected):
    assert problems(text)[0].startswith(expected)


# --------------------------------------------------------------------------- Ray Serve options serve_nb lacks


@pytest.mark.parametrize("text", [
    "grpc_options: {port: 9000, grpc_servicer_functions: []}\napplications: [{import_path: m:a}]",
    "target_capacity: null\ncontroller_options: null\napplications: [{import_path: m:a}]",
    "applications:\n- import_path: m:a\n  external_scaler_enabled: false\n  logging_config: {log_level: INFO}\n",
    with_deployment("placement_group_bundles: null\nplacement_group_strategy: PACK"),
    with_deployment("request_router_config: {request_router_kwargs: {}}\nbackpressure_config: {status_code: 503}"),
    with_deployment("autoscaling_config: {max_replicas: 3, smoothing_factor: 1.0, aggregation_function: mean}"),
    with_deployment("ray_actor_options: {num_cpus: 1, label_selector: null}"),
    "http_options: {ssl_keyfile: null}\napplications: [{import_path: m:a}]",
])
def test_a_ray_serve_option_serve_nb_lacks_is_accepted_where_it_changes_nothing(text):
    config = load(text)
    for app in config.applications:  # and left out: applying it would change nothing
        for override in app.deployments:
            assert override.options.keys() <= {"autoscaling_config", "ray_actor_options"}
            assert set(override.options.get("autoscaling_config", {})) <= {"max_replicas"}
            assert set(override.options.get("ray_actor_options", {})) <= {"num_cpus"}
    assert "ssl_keyfile" not in config.http_options


@pytest.mark.parametrize(("text", "expected"), [
    ("grpc_options: {port: 9001}\napplications: [{import_path: m:a}]", "serve_config.yaml:1: grpc_options: serve_nb "
     "does not support grpc_options yet (got {port: 9001}). Remove it (or set it to null) or leave it at Ray Serve's "
     "default {port: 9000, grpc_servicer_functions: [], request_timeout_s: null, enable_reflection: true}."),
    ("target_capacity: 50\napplications: [{import_path: m:a}]", "serve_config.yaml:1: target_capacity: serve_nb does "
     "not support target_capacity yet (got 50). Remove it (or set it to null)."),
    ("applications:\n- import_path: m:a\n  external_scaler_enabled: true\n", "serve_config.yaml:3: "
     "applications[0].external_scaler_enabled: serve_nb does not support external_scaler_enabled yet (got true)."),
    (with_deployment("placement_group_bundles: [{CPU: 1}]"), "serve_config.yaml:5: "
     "applications[0].deployments[0].placement_group_bundles: serve_nb does not support placement_group_bundles yet"),
    (with_deployment("request_router_config: {request_router_class: my:Router}"), "serve_config.yaml:5: "
     "applications[0].deployments[0].request_router_config: serve_nb does not support request_router_config yet"),
    (with_deployment("autoscaling_config: {smoothing_factor: 0.5}"), "serve_config.yaml:5: "
     "applications[0].deployments[0].autoscaling_config.smoothing_factor: serve_nb does not support smoothing_factor"),
])
def test_a_ray_serve_option_serve_nb_lacks_is_refused_at_any_other_value(text, expected):
    assert problem(text).startswith(expected)


def test_the_top_level_logging_config_of_the_multi_app_guide_is_read_and_checked():
    text = "logging_config:\n  encoding: JSON\n  log_level: INFO\n  logs_dir: null\n  enable_access_log: false\n" \
           "applications: [{import_path: m:a}]"
    assert load(text).logging_config == {"encoding": "JSON", "log_level": "INFO", "logs_dir": None,
                                         "enable_access_log": False, "additional_log_standard_attrs": []}
    assert problem("logging_config: {log_level: LOUD}\napplications: [{import_path: m:a}]").startswith(
        "serve_config.yaml:1: logging_config: logging_config: log_level must be one of DEBUG, INFO")
    assert problem("logging_config: {colour: red}\napplications: [{import_path: m:a}]").startswith(
        "serve_config.yaml:1: logging_config: logging_config has unknown keys ['colour']")


# --------------------------------------------------------------------------- names known only from the code


def test_an_override_of_a_deployment_the_code_lacks_is_named_with_its_line_and_the_real_names():
    app = load(TEXT_ML.replace("- name: Summarizer", "- name: Sumarizer")).applications[0]
    with pytest.raises(ConfigError) as info:
        check_deployment_names(app, ["Translator", "Summarizer"], "serve_config.yaml")
    assert str(info.value) == ("serve_config.yaml:20: applications['default'].deployments[1].name: no deployment named "
                               "'Sumarizer' in text_ml:app. Did you mean 'Summarizer'? Its deployments: Translator, "
                               "Summarizer.")
    check_deployment_names(load(TEXT_ML).applications[0], ["Summarizer", "Translator"], "serve_config.yaml")


# --------------------------------------------------------------------------- the file's options over the code's


def override(**options) -> DeploymentOverride:
    return DeploymentOverride("Model", options)


def test_options_the_file_sets_replace_the_codes_whole_and_the_rest_stay():
    code = {"ray_actor_options": {"num_cpus": 2, "num_gpus": 1}, "user_config": {"a": 1, "b": 2},
            "max_ongoing_requests": 8, "health_check_period_s": 3}
    merged = merge_options(code, override(ray_actor_options={"num_cpus": 1}, user_config={"a": 5},
                                          max_ongoing_requests=2))
    assert merged == {"ray_actor_options": {"num_cpus": 1}, "user_config": {"a": 5}, "max_ongoing_requests": 2,
                      "health_check_period_s": 3}


def test_a_fixed_num_replicas_in_the_file_turns_the_codes_autoscaling_off():
    merged = merge_options({"autoscaling_config": {"max_replicas": 5}}, override(num_replicas=3))
    assert merged == {"num_replicas": 3}
    assert DeploymentConfig.from_options(merged).autoscaling_config is None


@pytest.mark.parametrize("code_replicas", [3, "auto"])
def test_an_autoscaling_config_in_the_file_replaces_the_codes_num_replicas(code_replicas):
    merged = merge_options({"num_replicas": code_replicas}, override(autoscaling_config={"max_replicas": 4}))
    assert merged == {"autoscaling_config": {"max_replicas": 4}}
    assert DeploymentConfig.from_options(merged).autoscaling_config == AutoscalingConfig(max_replicas=4)


def test_num_replicas_auto_in_the_file_keeps_the_codes_autoscaling_settings_over_the_auto_defaults():
    merged = merge_options({"autoscaling_config": {"min_replicas": 2}}, override(num_replicas="auto"))
    assert DeploymentConfig.from_options(merged).autoscaling_config == AutoscalingConfig(
        min_replicas=2, max_replicas=100, target_ongoing_requests=2.0)


def test_autoscaling_config_null_in_the_file_turns_autoscaling_off():
    merged = merge_options({"num_replicas": "auto"}, override(autoscaling_config=None))
    assert DeploymentConfig.from_options(merged).num_replicas == 1
    assert merge_options({"num_replicas": 3}, override(autoscaling_config=None))["num_replicas"] == 3


def test_merging_changes_neither_the_code_options_nor_the_override():
    code = {"user_config": {"a": [1]}}
    given = override(ray_actor_options={"resources": {"tpu": 1}})
    merged = merge_options(code, given)
    merged["user_config"]["a"].append(2)
    merged["ray_actor_options"]["resources"]["tpu"] = 9
    assert code == {"user_config": {"a": [1]}}
    assert given.options == {"ray_actor_options": {"resources": {"tpu": 1}}}


# --------------------------------------------------------------------------- writing


APPS = [
    AppConfig("shop", "/shop", "shop.app:app", {"greeting": "hi", "sizes": [1, 2]}, {"env_vars": {"A": "1"}}, (
        DeploymentOverride("Model", {"num_replicas": "auto", "autoscaling_config": {"max_replicas": 6},
                                     "ray_actor_options": {"num_cpus": 0.5, "resources": {"tpu": 1}}}),
        DeploymentOverride("Ingress", {"num_replicas": 2, "user_config": {"threshold": 0.5, "labels": ["a"]},
                                       "initialization_timeout_s": 60.0}),
    )),
    AppConfig("batch", None, "jobs:app", {}, {}, ()),
]


def test_what_build_writes_reads_back_to_the_same_applications():
    assert load_config(build_config_text(APPS), "built.yaml").applications == tuple(APPS)


def test_build_names_serve_nbs_host_so_ray_serve_would_not_listen_on_every_interface():
    config = load_config(build_config_text(APPS), "built.yaml")
    assert config.http_options == {"host": "127.0.0.1", "port": 8000}
    assert config.proxy_location is ProxyLocation.EveryNode
    given = load_config(build_config_text(APPS, {"host": "0.0.0.0", "port": 8100}), "built.yaml")
    assert given.http_options == {"host": "0.0.0.0", "port": 8100}


def test_build_writes_ray_serves_layout():
    text = build_config_text(APPS[1:])
    assert text.startswith("# ")
    assert "\nproxy_location: EveryNode\n\nhttp_options:\n  host: 127.0.0.1\n  port: 8000\n\napplications:\n" \
           "- name: batch\n  route_prefix: null\n  import_path: jobs:app\n  runtime_env: {}\n" in text


def test_build_writes_an_autoscaling_config_object_as_its_settings_that_differ_from_the_defaults():
    app = AppConfig("a", "/", "m:app", {}, {}, (DeploymentOverride(
        "Model", {"autoscaling_config": AutoscalingConfig(min_replicas=0, max_replicas=4)}),))
    read = load_config(build_config_text([app]), "built.yaml").applications[0].deployments[0]
    assert read.options == {"autoscaling_config": {"min_replicas": 0, "max_replicas": 4}}


def test_build_refuses_what_load_would_refuse_or_yaml_cannot_hold():
    bad = AppConfig("a", "/", "m:app", {}, {}, (DeploymentOverride("Model", {"num_replicas": 0}),))
    with pytest.raises(ConfigError, match=r"^serve_nb build:\d+: applications\[0\]\.deployments\[0\]\.num_replicas: "):
        build_config_text([bad])
    odd = AppConfig("a", "/", "m:app", {"model": object()}, {}, ())
    with pytest.raises(TypeError, match=r"applications\[0\]\.args\.model: a object cannot be written"):
        build_config_text([odd])


@pytest.mark.parametrize("text", [TEXT_ML, FRUIT_AND_MATH, RESNET, SERVE_BUILD_2_60])
def test_a_read_config_dumps_to_a_file_that_reads_the_same(text):
    config = load(text)
    assert load_config(dump_config(config), "dumped.yaml") == config


def test_no_proxies_is_written_with_ray_serves_name():
    config = DeployConfig(ProxyLocation.NoServer, {}, None, tuple(APPS[1:]))
    assert dump_config(config).startswith("proxy_location: Disabled\n")


def test_an_applications_logging_config_is_read_checked_and_written_back():
    config = load("applications:\n- import_path: m:a\n  logging_config: {encoding: JSON, enable_access_log: false}\n")
    [app] = config.applications
    assert app.logging_config == {"encoding": "JSON", "log_level": "INFO", "logs_dir": None,
                                  "enable_access_log": False, "additional_log_standard_attrs": []}
    assert load_config(build_config_text([app]), "built.yaml").applications[0].logging_config == app.logging_config
    assert problem("applications:\n- import_path: m:a\n  logging_config: {encoding: XML}\n").startswith(
        "serve_config.yaml:3: applications[0].logging_config: logging_config: encoding must be TEXT or JSON")


def test_a_deployments_logging_config_is_an_option_checked_like_in_code():
    [override] = load(with_deployment("logging_config: {log_level: DEBUG}")).applications[0].deployments
    assert override.options["logging_config"] == {"log_level": "DEBUG"}
    assert "encoding must be TEXT or JSON" in problem(with_deployment("logging_config: {encoding: XML}"))
