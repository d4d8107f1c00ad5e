"""The deployment option table decides everything about an option: that ``@serve.deployment``
accepts it, whether changing it restarts, reconfigures or spares replicas, what reaches the
replica, and (for ``ray_actor_options``) that it reaches Ray."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from serve_nb.common.messages import DeploymentSpec, ReplicaConfig, ReplicaInit
from serve_nb.config import (
    DEPLOYMENT_OPTION_SPECS,
    DEPLOYMENT_OPTIONS,
    RAY_ACTOR_OPTION_KEYS,
    RAY_ACTOR_OPTION_SPECS,
    ActorOptionKind,
    DeploymentConfig,
    OptionEffect,
    actor_options,
    check_option_names,
    option_names,
)
from serve_nb.core.versions import config_version, replica_version
from serve_nb.deployment import deployment


class WithReconfigure:
    def reconfigure(self, config):
        self.config = config


#: For every option, a valid value other than its default. A new row in the table without a
#: value here fails ``test_every_option_has_a_changed_value``, so its effect gets tested.
CHANGED = {
    "name": "Renamed",
    "num_replicas": 3,
    "ray_actor_options": {"num_cpus": 1.0, "num_gpus": 1},
    "max_ongoing_requests": 9,
    "max_queued_requests": 10,
    "user_config": {"threshold": 0.5},
    "logging_config": {"encoding": "JSON", "enable_access_log": False},
    "autoscaling_config": {"min_replicas": 1, "max_replicas": 4},
    "health_check_period_s": 3.0,
    "health_check_timeout_s": 4.0,
    "graceful_shutdown_timeout_s": 5.0,
    "graceful_shutdown_wait_loop_s": 0.5,
    "version": "v2",
    "initialization_timeout_s": 60.0,
    "max_replicas_per_node": 2,
}

#: What a change does, per effect: (replica version changes, config version changes, the
#: ReplicaConfig a replica receives changes). A new effect without a row here fails a test.
EXPECTED = {
    OptionEffect.RESTART: (True, False, False),
    OptionEffect.RECONFIGURE: (False, True, True),
    OptionEffect.DEFERRED: (False, False, True),
    OptionEffect.ROUTING: (False, False, False),
    OptionEffect.CONTROLLER: (False, False, False),
    OptionEffect.IDENTITY: (False, False, False),
}


def config_of(**options):
    return deployment(WithReconfigure, **options).config


def versions_of(config):
    return replica_version("code", "args", config), config_version(config), ReplicaConfig.of(config)


# --------------------------------------------------------------------------- the table itself


def test_every_option_has_a_changed_value():
    assert set(CHANGED) == set(DEPLOYMENT_OPTIONS)


def test_every_effect_says_what_it_does():
    assert set(EXPECTED) == set(OptionEffect)


def test_every_config_field_is_a_row_and_every_row_but_the_name_a_field():
    fields = {f.name for f in dataclasses.fields(DeploymentConfig)}
    assert fields == set(DEPLOYMENT_OPTIONS) - set(option_names(OptionEffect.IDENTITY))
    assert len(DEPLOYMENT_OPTIONS) == len(set(DEPLOYMENT_OPTIONS))


@pytest.mark.parametrize("spec", [s for s in DEPLOYMENT_OPTION_SPECS if s.effect is not OptionEffect.IDENTITY],
                         ids=lambda s: s.name)
def test_the_table_default_is_what_a_deployment_gets(spec):
    assert getattr(config_of(), spec.name) == spec.default
    assert getattr(DeploymentConfig(), spec.name) == spec.default


def test_what_restarts_and_what_reconfigures_is_as_before():
    """Pinned on purpose: moving an option between effects changes what a redeploy does."""
    assert option_names(OptionEffect.RESTART) == ("ray_actor_options", "version")
    assert option_names(OptionEffect.RECONFIGURE) == ("max_ongoing_requests", "user_config", "logging_config")
    assert option_names(OptionEffect.ROUTING) == ("max_queued_requests",)


# --------------------------------------------------------------------------- validation


def test_unknown_option_lists_exactly_the_table():
    with pytest.raises(TypeError) as info:
        check_option_names({"num_replica": 2})
    assert str(info.value).endswith(f"Valid options: {', '.join(s.name for s in DEPLOYMENT_OPTION_SPECS)}.")


@pytest.mark.parametrize("name", DEPLOYMENT_OPTIONS)
def test_every_row_is_accepted_by_the_decorator_and_options(name):
    assert deployment(WithReconfigure, **{name: CHANGED[name]}).name
    assert deployment(WithReconfigure).options(**{name: CHANGED[name]}).name


# --------------------------------------------------------------------------- effects on versions


@pytest.mark.parametrize("spec", DEPLOYMENT_OPTION_SPECS, ids=lambda s: s.name)
def test_changing_an_option_has_its_effect(spec):
    before = versions_of(config_of())
    after = versions_of(config_of(**{spec.name: CHANGED[spec.name]}))
    changed = tuple(b != a for b, a in zip(before, after))
    assert changed == EXPECTED[spec.effect]


def test_replica_config_holds_exactly_what_reaches_replicas():
    reaching = {s.name for s in DEPLOYMENT_OPTION_SPECS if s.effect.reaches_replicas}
    assert {f.name for f in dataclasses.fields(ReplicaConfig)} == reaching | {"config_version"}
    default = ReplicaConfig.of(DeploymentConfig())
    assert ReplicaConfig(config_version=default.config_version) == default


def test_replica_config_carries_its_config_version():
    config = config_of(user_config={"a": 1}, max_ongoing_requests=7)
    assert ReplicaConfig.of(config).config_version == config_version(config)


# --------------------------------------------------------------------------- ray actor options

#: A valid value per kind of ray_actor_options key.
SAMPLE = {
    ActorOptionKind.AMOUNT: 2,
    ActorOptionKind.RESOURCES: {"custom": 1.5},
    ActorOptionKind.TEXT: "A100",
    ActorOptionKind.MAPPING: {"env_vars": {"X": "1"}},
}
BAD = {
    ActorOptionKind.AMOUNT: -1,
    ActorOptionKind.RESOURCES: {"custom": -1},
    ActorOptionKind.TEXT: 3,
    ActorOptionKind.MAPPING: "env",
}


def test_every_actor_option_kind_has_samples():
    assert set(SAMPLE) == set(BAD) == set(ActorOptionKind)
    assert RAY_ACTOR_OPTION_KEYS == tuple(s.name for s in RAY_ACTOR_OPTION_SPECS)


@pytest.mark.parametrize("spec", RAY_ACTOR_OPTION_SPECS, ids=lambda s: s.name)
def test_every_ray_actor_option_reaches_ray(spec):
    config = config_of(ray_actor_options={spec.name: SAMPLE[spec.kind]})
    assert actor_options(config)[spec.name] == SAMPLE[spec.kind]


@pytest.mark.parametrize("spec", RAY_ACTOR_OPTION_SPECS, ids=lambda s: s.name)
def test_every_ray_actor_option_is_checked_by_its_kind(spec):
    with pytest.raises(ValueError, match=rf"ray_actor_options\['{spec.name}'\]"):
        config_of(ray_actor_options={spec.name: BAD[spec.kind]})


def test_object_store_memory_reaches_ray():
    config = config_of(ray_actor_options={"num_cpus": 0.5, "object_store_memory": 2**20})
    assert actor_options(config) == {"num_cpus": 0.5, "object_store_memory": 2**20}


def test_actor_options_default_and_unset_keys():
    assert actor_options(config_of()) == {"num_cpus": 1.0}
    assert actor_options(config_of(ray_actor_options={"num_gpus": None, "runtime_env": None})) == {"num_cpus": 1.0}


def test_actor_options_are_copies():
    config = config_of(ray_actor_options={"resources": {"custom": 1}})
    actor_options(config)["resources"]["custom"] = 99
    assert config.ray_actor_options["resources"] == {"custom": 1}


# --------------------------------------------------------------------------- the replica's record


def spec_of(config):
    return DeploymentSpec("Model", b"code", b"args", config, "v1", True)


def test_replica_init_is_built_from_the_spec():
    spec = spec_of(config_of(user_config={"a": 1}, max_ongoing_requests=7))
    init = ReplicaInit.for_replica(spec, app="app", replica_id="r1", controller="ctl")
    assert (init.app, init.deployment, init.replica_id, init.version) == ("app", "Model", "r1", "v1")
    assert (init.def_blob, init.args_blob, init.is_class) == (b"code", b"args", True)
    assert init.config == spec.replica_config
    assert (init.config.user_config, init.config.max_ongoing_requests) == ({"a": 1}, 7)
    assert (init.controller, init.cluster_info) == ("ctl", None)


def replica_core(config):
    from serve_nb.data.replica import ReplicaCore

    spec = spec_of(config)
    core = ReplicaCore(ReplicaInit.for_replica(spec, app="app", replica_id="r1"))
    core._obj = WithReconfigure()  # what initialize() would have constructed
    return core


def test_the_replica_applies_a_new_record_whole():
    core = replica_core(config_of())
    new = ReplicaConfig.of(config_of(user_config={"a": 2}, max_ongoing_requests=3))
    assert asyncio.run(core.reconfigure(new)) is None
    assert core._obj.config == {"a": 2}
    assert core.metadata().config_version == new.config_version
    for _ in range(3):
        assert core.try_acquire()
    assert not core.try_acquire()  # the new max_ongoing_requests is in force


def test_a_failed_user_reconfigure_keeps_the_old_config_version():
    core = replica_core(config_of())
    old = core.metadata().config_version

    class Broken:
        def reconfigure(self, config):
            raise RuntimeError("bad config")

    core._obj = Broken()
    error = asyncio.run(core.reconfigure(ReplicaConfig.of(config_of(user_config={"a": 3}))))
    assert "bad config" in error
    assert core.metadata().config_version == old
