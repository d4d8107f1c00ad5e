"""Deployment, autoscaling and HTTP options: defaults in one place, validated with clear errors.

Every check here runs in the caller before anything reaches the cluster, so bad input
never leaves a half-deployed application behind.

Each deployment option is one row of ``DEPLOYMENT_OPTION_SPECS``: its name (what
``@serve.deployment`` accepts), its default, and its ``OptionEffect`` (what a change does to
running replicas, hence which version it is hashed into). Each ``ray_actor_options`` key is one
row of ``RAY_ACTOR_OPTION_SPECS`` (how it is validated; every key set is passed to Ray).
Adding an option means adding a row; the tests walk the tables.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, Callable, Mapping

from serve_nb.core.keywords import UnsupportedOptionError
from serve_nb.core.log_format import LoggingConfig
from serve_nb.core.route_prefix import validate_route_prefix  # noqa: F401 - its home before; kept importable
# HTTP options live in their own module; re-exported so every import of them keeps working.
from serve_nb.http_options import MAX_PORT, HTTPOptions, ProxyLocation  # noqa: F401

# --------------------------------------------------------------------------- defaults

DEFAULT_NUM_REPLICAS = 1
DEFAULT_MAX_ONGOING_REQUESTS = 5
#: ``max_queued_requests`` value meaning "no limit" (Ray Serve's spelling).
UNLIMITED_QUEUED_REQUESTS = -1
DEFAULT_MAX_QUEUED_REQUESTS = UNLIMITED_QUEUED_REQUESTS
DEFAULT_HEALTH_CHECK_PERIOD_S = 10.0
DEFAULT_HEALTH_CHECK_TIMEOUT_S = 30.0
DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_S = 20.0
DEFAULT_GRACEFUL_SHUTDOWN_WAIT_LOOP_S = 2.0
#: Ray Serve reserves one CPU per replica unless ``ray_actor_options`` says otherwise.
DEFAULT_REPLICA_NUM_CPUS = 1.0
DEFAULT_RAY_ACTOR_OPTIONS: Mapping[str, Any] = MappingProxyType({"num_cpus": DEFAULT_REPLICA_NUM_CPUS})
#: ``num_replicas=AUTO_NUM_REPLICAS`` autoscales, with these settings unless given (as in Ray Serve).
AUTO_NUM_REPLICAS = "auto"
AUTO_NUM_REPLICAS_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {"min_replicas": 1, "max_replicas": 100, "target_ongoing_requests": 2.0}
)


# --------------------------------------------------------------------------- the option table


class OptionEffect(Enum):
    """What changing a deployment option on a redeploy does to its running replicas.

    This is the one place that decides it: ``core.versions`` hashes RESTART options into the
    replica (code) version and RECONFIGURE options into the config version, and the replica
    receives exactly the options that reach it (``reaches_replicas``) in its ``ReplicaConfig``.
    """

    #: Part of the replica version: replicas are replaced (code inputs, process resources).
    RESTART = "restart"
    #: Part of the config version: running replicas get their new ``ReplicaConfig`` in place.
    RECONFIGURE = "reconfigure"
    #: Read by replicas, but not versioned: a change alone leaves running replicas alone; they
    #: see it when next started or reconfigured. (Ray Serve reconfigures for these.)
    DEFERRED = "deferred"
    #: Published to routers with the replica set; replicas are not touched.
    ROUTING = "routing"
    #: Used by the controller only (scaling, health checks, stop timing); replicas are not touched.
    CONTROLLER = "controller"
    #: Names the deployment: another value is another deployment, not a change to this one.
    IDENTITY = "identity"

    @property
    def reaches_replicas(self) -> bool:
        """True if replicas read the option (so it belongs in their ``ReplicaConfig``)."""
        return self in (OptionEffect.RECONFIGURE, OptionEffect.DEFERRED)


@dataclass(frozen=True)
class OptionSpec:
    """One option ``@serve.deployment`` / ``.options()`` accepts."""

    name: str
    default: Any
    effect: OptionEffect


#: Every deployment option, in the order error messages list them.
DEPLOYMENT_OPTION_SPECS: tuple[OptionSpec, ...] = (
    OptionSpec("name", None, OptionEffect.IDENTITY),  # None: the class or function name
    OptionSpec("num_replicas", DEFAULT_NUM_REPLICAS, OptionEffect.CONTROLLER),
    OptionSpec("ray_actor_options", DEFAULT_RAY_ACTOR_OPTIONS, OptionEffect.RESTART),
    OptionSpec("max_ongoing_requests", DEFAULT_MAX_ONGOING_REQUESTS, OptionEffect.RECONFIGURE),
    OptionSpec("max_queued_requests", DEFAULT_MAX_QUEUED_REQUESTS, OptionEffect.ROUTING),
    OptionSpec("user_config", None, OptionEffect.RECONFIGURE),
    OptionSpec("logging_config", None, OptionEffect.RECONFIGURE),  # access lines, encoding, level: in place
    OptionSpec("autoscaling_config", None, OptionEffect.CONTROLLER),
    OptionSpec("health_check_period_s", DEFAULT_HEALTH_CHECK_PERIOD_S, OptionEffect.CONTROLLER),
    OptionSpec("health_check_timeout_s", DEFAULT_HEALTH_CHECK_TIMEOUT_S, OptionEffect.CONTROLLER),
    OptionSpec("graceful_shutdown_timeout_s", DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_S, OptionEffect.CONTROLLER),
    OptionSpec("graceful_shutdown_wait_loop_s", DEFAULT_GRACEFUL_SHUTDOWN_WAIT_LOOP_S, OptionEffect.DEFERRED),
    OptionSpec("version", None, OptionEffect.RESTART),  # None: the code's structural hash
    # serve_nb's own: a replica whose __init__ has not returned by then fails the deploy (None: wait).
    OptionSpec("initialization_timeout_s", None, OptionEffect.CONTROLLER),
    # Where new replicas may go (running ones stay where they are, as in Ray Serve's scheduler).
    OptionSpec("max_replicas_per_node", None, OptionEffect.CONTROLLER),
)

#: Ray Serve's bounds for ``max_replicas_per_node``.
MAX_REPLICAS_PER_NODE_LIMIT = 100

#: Options ``@serve.deployment`` and ``Deployment.options`` accept.
DEPLOYMENT_OPTIONS: tuple[str, ...] = tuple(spec.name for spec in DEPLOYMENT_OPTION_SPECS)

#: Ray Serve 2.60 deployment options serve_nb does not implement: accepted only as None (not set).
UNSUPPORTED_RAY_SERVE_OPTIONS = (
    "placement_group_bundles", "placement_group_strategy", "placement_group_bundle_label_selector",
    "backpressure_config", "request_router_config",
    "max_constructor_retry_count", "gang_scheduling_config", "deployment_actors", "rolling_update_percentage",
    "max_surge_percent",
)
#: Options of older Ray Serve versions that moved elsewhere: always refused, with where they went.
MOVED_RAY_SERVE_OPTIONS: Mapping[str, str] = MappingProxyType(
    {"route_prefix": "Pass route_prefix to serve.run() instead."}
)


def option_names(*effects: OptionEffect) -> tuple[str, ...]:
    """The deployment options with any of ``effects``, in table order."""
    return tuple(spec.name for spec in DEPLOYMENT_OPTION_SPECS if spec.effect in effects)


def option_values(config: "DeploymentConfig", *effects: OptionEffect) -> dict[str, Any]:
    """``{name: value}`` of ``config``'s options with any of ``effects`` (what a version hashes)."""
    return {name: getattr(config, name) for name in option_names(*effects)}


class ActorOptionKind(Enum):
    """How a ``ray_actor_options`` value is checked."""

    AMOUNT = "amount"  # a number >= 0 (or None)
    RESOURCES = "resources"  # {resource name: number >= 0}
    TEXT = "text"  # a string (or None)
    MAPPING = "mapping"  # a dict (or None)


@dataclass(frozen=True)
class ActorOptionSpec:
    """One key ``ray_actor_options`` accepts; every key that is set is passed on to Ray."""

    name: str
    kind: ActorOptionKind


#: Keys ``ray_actor_options`` accepts (as in Ray Serve).
RAY_ACTOR_OPTION_SPECS: tuple[ActorOptionSpec, ...] = (
    ActorOptionSpec("num_cpus", ActorOptionKind.AMOUNT),
    ActorOptionSpec("num_gpus", ActorOptionKind.AMOUNT),
    ActorOptionSpec("memory", ActorOptionKind.AMOUNT),
    ActorOptionSpec("object_store_memory", ActorOptionKind.AMOUNT),
    ActorOptionSpec("resources", ActorOptionKind.RESOURCES),
    ActorOptionSpec("accelerator_type", ActorOptionKind.TEXT),
    ActorOptionSpec("runtime_env", ActorOptionKind.MAPPING),
)
RAY_ACTOR_OPTION_KEYS: tuple[str, ...] = tuple(spec.name for spec in RAY_ACTOR_OPTION_SPECS)


def check_option_names(options: Mapping[str, Any]) -> None:
    """Raise TypeError naming any option ``@serve.deployment`` does not take, before anything is built.

    A Ray Serve option serve_nb does not implement passes only as None (not set): ignoring any other
    value would deploy something else than the user asked for (UnsupportedOptionError, a TypeError).
    """
    if options.get("max_replicas_per_node") is not None and options.get("placement_group_bundles") is not None:
        raise ValueError(  # Ray Serve's words: placing by bundles and capping per node exclude each other
            "Setting max_replicas_per_node is not allowed when placement_group_bundles is provided."
        )
    for key in options:
        if key in MOVED_RAY_SERVE_OPTIONS:
            raise TypeError(f"Deployment option '{key}' is not a deployment option. {MOVED_RAY_SERVE_OPTIONS[key]}")
        if key in UNSUPPORTED_RAY_SERVE_OPTIONS:
            if options[key] is not None:
                raise UnsupportedOptionError(
                    f"Deployment option '{key}' is a Ray Serve option that serve_nb does not support yet (got "
                    f"{options[key]!r}). Leave it out (None, meaning not set, is accepted); nothing was deployed."
                )
        elif key not in DEPLOYMENT_OPTIONS:
            raise TypeError(f"Unknown deployment option '{key}'. Valid options: {', '.join(DEPLOYMENT_OPTIONS)}.")


def _check_mapping(cls: type, value: Any, label: str) -> None:
    """``value`` must be a dict whose keys are fields of dataclass ``cls``; the error lists valid keys."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{label} must be a dict or {cls.__name__}, got {type(value).__name__}.")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"Unknown {label} key(s): {', '.join(unknown)}. Valid keys: {', '.join(sorted(known))}.")


def _own(value: Any) -> Any:
    """A private copy of mutable option values (dicts, lists); immutable ones as they are."""
    return copy.deepcopy(value) if isinstance(value, (dict, list)) else value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return value


def _non_negative(name: str, value: Any, *, strict: bool = False) -> float:
    if not _is_number(value) or value < 0 or (strict and value == 0):
        bound = "> 0" if strict else ">= 0"
        raise ValueError(f"{name} must be a number {bound}, got {value!r}.")
    return float(value)


@dataclass(frozen=True)
class AutoscalingConfig:
    """Autoscaling settings, named and defaulted as in Ray Serve."""

    min_replicas: int = 1
    initial_replicas: int | None = None
    max_replicas: int = 1
    target_ongoing_requests: float = 2.0
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    downscale_to_zero_delay_s: float | None = None
    upscaling_factor: float | None = None
    downscaling_factor: float | None = None
    metrics_interval_s: float = 10.0
    look_back_period_s: float = 30.0

    def __post_init__(self) -> None:
        _positive_int("autoscaling_config.min_replicas", self.min_replicas, minimum=0)
        _positive_int("autoscaling_config.max_replicas", self.max_replicas, minimum=1)
        if self.initial_replicas is not None:
            _positive_int("autoscaling_config.initial_replicas", self.initial_replicas, minimum=0)
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"autoscaling_config: min_replicas ({self.min_replicas}) must be <= "
                f"max_replicas ({self.max_replicas})."
            )
        if self.initial_replicas is not None and not (
            self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError(
                "autoscaling_config: initial_replicas must lie between min_replicas and "
                f"max_replicas ({self.min_replicas} <= {self.initial_replicas} <= "
                f"{self.max_replicas} does not hold)."
            )
        _non_negative("autoscaling_config.target_ongoing_requests", self.target_ongoing_requests, strict=True)
        for name in ("upscale_delay_s", "downscale_delay_s"):
            _non_negative(f"autoscaling_config.{name}", getattr(self, name))
        if self.downscale_to_zero_delay_s is not None:
            _non_negative("autoscaling_config.downscale_to_zero_delay_s", self.downscale_to_zero_delay_s)
        for name in ("upscaling_factor", "downscaling_factor"):
            if getattr(self, name) is not None:
                _non_negative(f"autoscaling_config.{name}", getattr(self, name), strict=True)
        _non_negative("autoscaling_config.metrics_interval_s", self.metrics_interval_s, strict=True)
        _non_negative("autoscaling_config.look_back_period_s", self.look_back_period_s, strict=True)

    @classmethod
    def from_user(cls, value: "AutoscalingConfig | Mapping[str, Any]", *, auto: bool = False) -> "AutoscalingConfig":
        """Build from a dict (unknown keys -> ValueError); ``auto`` applies num_replicas="auto" defaults."""
        if isinstance(value, AutoscalingConfig):
            return value
        _check_mapping(cls, value, "autoscaling_config")
        merged: dict[str, Any] = dict(AUTO_NUM_REPLICAS_DEFAULTS) if auto else {}
        merged.update(value)
        return cls(**merged)

    @property
    def start_replicas(self) -> int:
        """How many replicas a fresh deployment starts with."""
        return self.initial_replicas if self.initial_replicas is not None else self.min_replicas

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- ray_actor_options


def _actor_amount(key: str, value: Any) -> Any:
    if value is not None:
        _non_negative(f"ray_actor_options['{key}']", value)
    return value


def _actor_resources(key: str, value: Any) -> Any:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and _is_number(v) and v >= 0 for k, v in value.items()
    ):
        raise ValueError(f"ray_actor_options['{key}'] must map resource names to numbers >= 0.")
    return dict(value)


def _actor_text(key: str, value: Any) -> Any:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"ray_actor_options['{key}'] must be a string.")
    return value


def _actor_mapping(key: str, value: Any) -> Any:
    if value is not None and not isinstance(value, Mapping):
        raise ValueError(f"ray_actor_options['{key}'] must be a dict.")
    return value


_ACTOR_OPTION_CHECKS: Mapping[ActorOptionKind, Callable[[str, Any], Any]] = MappingProxyType(
    {
        ActorOptionKind.AMOUNT: _actor_amount,
        ActorOptionKind.RESOURCES: _actor_resources,
        ActorOptionKind.TEXT: _actor_text,
        ActorOptionKind.MAPPING: _actor_mapping,
    }
)


def validate_ray_actor_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check keys and value types; fill in Ray Serve's default of one CPU per replica."""
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise TypeError(f"ray_actor_options must be a dict, got {type(options).__name__}.")
    unknown = sorted(set(options) - set(RAY_ACTOR_OPTION_KEYS))
    if unknown:
        raise ValueError(
            f"Unknown ray_actor_options key(s): {', '.join(unknown)}. "
            f"Valid keys: {', '.join(RAY_ACTOR_OPTION_KEYS)}."
        )
    out = dict(options)
    for spec in RAY_ACTOR_OPTION_SPECS:
        if spec.name in out:
            out[spec.name] = _ACTOR_OPTION_CHECKS[spec.kind](spec.name, out[spec.name])
    for key, value in DEFAULT_RAY_ACTOR_OPTIONS.items():
        out.setdefault(key, value)
    return out


def actor_options(config: "DeploymentConfig") -> dict[str, Any]:
    """The Ray actor options for one of ``config``'s replicas: every ``ray_actor_options`` key
    that is set (not None), as copies. The controller adds its own (name, lifetime, ...) on top;
    going through this one function is what keeps validated options from being dropped."""
    opts = config.ray_actor_options
    return {key: copy.deepcopy(opts[key]) for key in RAY_ACTOR_OPTION_KEYS if opts.get(key) is not None}


# --------------------------------------------------------------------------- DeploymentConfig


def _check_json(name: str, value: Any) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be JSON-serializable ({exc}).") from None


@dataclass(frozen=True)
class DeploymentConfig:
    """Validated per-deployment settings: one field per row of ``DEPLOYMENT_OPTION_SPECS`` (but
    ``name``); the row's effect says whether a change restarts, reconfigures or spares replicas."""

    num_replicas: int | None = DEFAULT_NUM_REPLICAS
    max_ongoing_requests: int = DEFAULT_MAX_ONGOING_REQUESTS
    max_queued_requests: int = DEFAULT_MAX_QUEUED_REQUESTS
    user_config: Any = None
    logging_config: LoggingConfig | None = None
    autoscaling_config: AutoscalingConfig | None = None
    health_check_period_s: float = DEFAULT_HEALTH_CHECK_PERIOD_S
    health_check_timeout_s: float = DEFAULT_HEALTH_CHECK_TIMEOUT_S
    graceful_shutdown_timeout_s: float = DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_S
    graceful_shutdown_wait_loop_s: float = DEFAULT_GRACEFUL_SHUTDOWN_WAIT_LOOP_S
    ray_actor_options: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_RAY_ACTOR_OPTIONS))
    version: str | None = None
    initialization_timeout_s: float | None = None
    max_replicas_per_node: int | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "DeploymentConfig":
        """Validate user options (already name-checked) into a config; raise ValueError/TypeError."""
        check_option_names(options)
        kw: dict[str, Any] = {k: _own(v) for k, v in options.items() if k != "name"}
        autoscaling = kw.get("autoscaling_config")
        num_replicas = kw.get("num_replicas", None if autoscaling is not None else DEFAULT_NUM_REPLICAS)
        if num_replicas == AUTO_NUM_REPLICAS:
            kw["autoscaling_config"] = AutoscalingConfig.from_user(autoscaling or {}, auto=True)
            kw["num_replicas"] = None
        elif num_replicas is None:
            kw["num_replicas"] = None if autoscaling is not None else DEFAULT_NUM_REPLICAS
        else:
            if isinstance(num_replicas, str):
                raise ValueError(f"num_replicas must be a positive integer or \"auto\", got {num_replicas!r}.")
            _positive_int("num_replicas", num_replicas)
            if autoscaling is not None:
                raise ValueError(
                    "Set either num_replicas (a fixed count) or autoscaling_config, not both. "
                    "Use num_replicas=\"auto\" to autoscale with custom settings."
                )
        if kw.get("autoscaling_config") is not None:
            kw["autoscaling_config"] = AutoscalingConfig.from_user(kw["autoscaling_config"])
        if "max_ongoing_requests" in kw:
            _positive_int("max_ongoing_requests", kw["max_ongoing_requests"])
        if "max_queued_requests" in kw:
            mq = kw["max_queued_requests"]
            if not isinstance(mq, int) or isinstance(mq, bool) or (mq < 1 and mq != UNLIMITED_QUEUED_REQUESTS):
                raise ValueError(
                    f"max_queued_requests must be {UNLIMITED_QUEUED_REQUESTS} (unlimited) or an integer >= 1, "
                    f"got {mq!r}."
                )
        if "user_config" in kw and kw["user_config"] is not None:
            _check_json("user_config", kw["user_config"])
        if kw.get("logging_config") is not None:
            kw["logging_config"] = LoggingConfig.parse(kw["logging_config"])
        for name in ("health_check_period_s", "health_check_timeout_s"):
            if name in kw:
                kw[name] = _non_negative(name, kw[name], strict=True)
        for name in ("graceful_shutdown_timeout_s", "graceful_shutdown_wait_loop_s"):
            if name in kw:
                kw[name] = _non_negative(name, kw[name])
        per_node = kw.get("max_replicas_per_node")
        if per_node is not None:
            if not isinstance(per_node, int) or isinstance(per_node, bool):
                raise TypeError(
                    f"Get invalid type '{type(per_node)}' for max_replicas_per_node. Expected None or an integer in "
                    f"the range of [1, {MAX_REPLICAS_PER_NODE_LIMIT}]."
                )
            if not 1 <= per_node <= MAX_REPLICAS_PER_NODE_LIMIT:
                raise ValueError(
                    f"Invalid max_replicas_per_node {per_node}. Valid values are None or an integer in the range of "
                    f"[1, {MAX_REPLICAS_PER_NODE_LIMIT}]."
                )
        if kw.get("initialization_timeout_s") is not None:
            kw["initialization_timeout_s"] = _non_negative("initialization_timeout_s", kw["initialization_timeout_s"],
                                                           strict=True)
        kw["ray_actor_options"] = validate_ray_actor_options(kw.get("ray_actor_options"))
        if kw.get("version") is not None and not isinstance(kw["version"], str):
            raise TypeError(f"version must be a string, got {type(kw['version']).__name__}.")
        return cls(**kw)

    @property
    def initial_replicas(self) -> int:
        if self.autoscaling_config is not None:
            return self.autoscaling_config.start_replicas
        return self.num_replicas or DEFAULT_NUM_REPLICAS
