"""Deployment, autoscaling and HTTP options: defaults in one place, validated with clear errors.

Every check here runs in the caller before anything reaches the cluster, so bad input
never leaves a half-deployed application behind.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

#: Options ``@serve.deployment`` and ``Deployment.options`` accept.
DEPLOYMENT_OPTIONS = (
    "name",
    "num_replicas",
    "ray_actor_options",
    "max_ongoing_requests",
    "max_queued_requests",
    "user_config",
    "autoscaling_config",
    "health_check_period_s",
    "health_check_timeout_s",
    "graceful_shutdown_timeout_s",
    "graceful_shutdown_wait_loop_s",
    "version",
)

#: Ray Serve options serve_nb knows of but does not implement: named in the error.
UNSUPPORTED_RAY_SERVE_OPTIONS = (
    "route_prefix",
    "placement_group_bundles",
    "placement_group_strategy",
    "max_replicas_per_node",
    "logging_config",
    "request_router_config",
    "deployment_actors",
)

#: Keys ``ray_actor_options`` accepts (as in Ray Serve).
RAY_ACTOR_OPTION_KEYS = (
    "num_cpus",
    "num_gpus",
    "memory",
    "object_store_memory",
    "resources",
    "accelerator_type",
    "runtime_env",
)

DEFAULT_REPLICA_NUM_CPUS = 1.0


def check_option_names(options: Mapping[str, Any]) -> None:
    """Raise TypeError naming any option ``@serve.deployment`` does not take."""
    for key in options:
        if key in DEPLOYMENT_OPTIONS:
            continue
        if key in UNSUPPORTED_RAY_SERVE_OPTIONS:
            raise TypeError(
                f"Deployment option '{key}' is a Ray Serve option that serve_nb does not support."
                + (" Pass route_prefix to serve.run() instead." if key == "route_prefix" else "")
            )
        raise TypeError(
            f"Unknown deployment option '{key}'. Valid options: {', '.join(DEPLOYMENT_OPTIONS)}."
        )


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
        merged: dict[str, Any] = {"min_replicas": 1, "max_replicas": 100, "target_ongoing_requests": 2.0} if auto else {}
        merged.update(value)
        return cls(**merged)

    @property
    def start_replicas(self) -> int:
        """How many replicas a fresh deployment starts with."""
        return self.initial_replicas if self.initial_replicas is not None else self.min_replicas

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
    for key in ("num_cpus", "num_gpus", "memory", "object_store_memory"):
        if key in out and out[key] is not None:
            _non_negative(f"ray_actor_options['{key}']", out[key])
    if "resources" in out:
        res = out["resources"]
        if not isinstance(res, Mapping) or not all(
            isinstance(k, str) and _is_number(v) and v >= 0 for k, v in res.items()
        ):
            raise ValueError("ray_actor_options['resources'] must map resource names to numbers >= 0.")
        out["resources"] = dict(res)
    if "runtime_env" in out and out["runtime_env"] is not None and not isinstance(out["runtime_env"], Mapping):
        raise ValueError("ray_actor_options['runtime_env'] must be a dict.")
    if "accelerator_type" in out and out["accelerator_type"] is not None and not isinstance(out["accelerator_type"], str):
        raise ValueError("ray_actor_options['accelerator_type'] must be a string.")
    out.setdefault("num_cpus", DEFAULT_REPLICA_NUM_CPUS)
    return out


def _check_json(name: str, value: Any) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be JSON-serializable ({exc}).") from None


@dataclass(frozen=True)
class DeploymentConfig:
    """Validated per-deployment settings. Which fields force a restart is decided in core.versions."""

    num_replicas: int | None = 1
    max_ongoing_requests: int = 5
    max_queued_requests: int = -1
    user_config: Any = None
    autoscaling_config: AutoscalingConfig | None = None
    health_check_period_s: float = 10.0
    health_check_timeout_s: float = 30.0
    graceful_shutdown_timeout_s: float = 20.0
    graceful_shutdown_wait_loop_s: float = 2.0
    ray_actor_options: dict[str, Any] = field(default_factory=lambda: {"num_cpus": DEFAULT_REPLICA_NUM_CPUS})
    version: str | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "DeploymentConfig":
        """Validate user options (already name-checked) into a config; raise ValueError/TypeError."""
        check_option_names(options)
        kw: dict[str, Any] = {k: _own(v) for k, v in options.items() if k not in ("name",)}
        autoscaling = kw.get("autoscaling_config")
        num_replicas = kw.get("num_replicas", None if autoscaling is not None else 1)
        if num_replicas == "auto":
            kw["autoscaling_config"] = AutoscalingConfig.from_user(autoscaling or {}, auto=True)
            kw["num_replicas"] = None
        elif num_replicas is None:
            kw["num_replicas"] = None if autoscaling is not None else 1
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
            if not isinstance(mq, int) or isinstance(mq, bool) or (mq < 1 and mq != -1):
                raise ValueError(f"max_queued_requests must be -1 (unlimited) or an integer >= 1, got {mq!r}.")
        if "user_config" in kw and kw["user_config"] is not None:
            _check_json("user_config", kw["user_config"])
        for name in ("health_check_period_s", "health_check_timeout_s"):
            if name in kw:
                kw[name] = _non_negative(name, kw[name], strict=True)
        for name in ("graceful_shutdown_timeout_s", "graceful_shutdown_wait_loop_s"):
            if name in kw:
                kw[name] = _non_negative(name, kw[name])
        kw["ray_actor_options"] = validate_ray_actor_options(kw.get("ray_actor_options"))
        if kw.get("version") is not None and not isinstance(kw["version"], str):
            raise TypeError(f"version must be a string, got {type(kw['version']).__name__}.")
        return cls(**kw)

    @property
    def initial_replicas(self) -> int:
        if self.autoscaling_config is not None:
            return self.autoscaling_config.start_replicas
        return self.num_replicas or 1


@dataclass(frozen=True)
class HTTPOptions:
    """Where the per-node HTTP proxies listen, and how they treat requests."""

    host: str = "127.0.0.1"
    port: int = 8000
    root_path: str = ""
    request_timeout_s: float | None = None
    keep_alive_timeout_s: float = 5.0
    location: str = "EveryNode"
    start_timeout_s: float = 30.0
    debug_errors: bool = False
    #: Let several proxies share the port (simulated multi-node clusters on one machine). Off by default:
    #: a stale proxy could then silently take a share of the traffic.
    reuse_port: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"http_options host must be a non-empty string, got {self.host!r}.")
        _positive_int("http_options port", self.port, minimum=0)
        if self.port > 65535:
            raise ValueError(f"http_options port must be <= 65535, got {self.port}.")
        if self.request_timeout_s is not None:
            _non_negative("http_options request_timeout_s", self.request_timeout_s, strict=True)
        if self.location not in ("EveryNode", "HeadOnly", "NoServer"):
            raise ValueError(
                f"http_options location must be 'EveryNode', 'HeadOnly' or 'NoServer', got {self.location!r}."
            )

    @classmethod
    def from_user(cls, value: "HTTPOptions | Mapping[str, Any] | None") -> "HTTPOptions":
        if value is None:
            return cls()
        if isinstance(value, HTTPOptions):
            return value
        _check_mapping(cls, value, "http_options")
        return cls(**value)


def validate_route_prefix(route_prefix: str | None) -> str | None:
    """A prefix starts with '/', has no trailing '/' (except the root) and no wildcards."""
    if route_prefix is None:
        return None
    if not isinstance(route_prefix, str) or not route_prefix.startswith("/"):
        raise ValueError(f"route_prefix must start with '/' or be None (no HTTP), got {route_prefix!r}.")
    if "{" in route_prefix or "}" in route_prefix:
        raise ValueError(f"route_prefix may not contain wildcards ('{{' or '}}'), got {route_prefix!r}.")
    if len(route_prefix) > 1 and route_prefix.endswith("/"):
        route_prefix = route_prefix.rstrip("/") or "/"
    return route_prefix
