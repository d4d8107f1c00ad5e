"""Ray Serve's config file (``serve deploy`` / ``serve run config.yaml``), read and checked before anything runs.

The format is Ray Serve 2.60's ``ServeDeploySchema``: top-level ``proxy_location`` and ``http_options``, then
``applications``, each an ``import_path`` with its ``args``, ``runtime_env`` and per-deployment overrides.
A file written for Ray Serve (or by ``serve build``) reads unchanged, with three differences, all in the
direction of refusing rather than guessing:

- an unknown key is an error naming the closest valid one (Ray Serve ignores unknown keys, so a typo such as
  ``num_replica: 4`` silently deploys one replica);
- a Ray Serve option serve_nb does not implement is accepted only at a value that changes nothing (null, or
  Ray Serve's default, e.g. the ``grpc_options`` that ``serve build`` writes);
- every value goes through the checks ``@serve.deployment`` and ``serve.start`` run (``serve_nb.config``),
  so a file and the code say the same thing about the same mistake.

Every problem of a file is reported at once, one line each: ``file:line: dotted.path: what to do``.
Whether each ``deployments[].name`` exists can only be known once the application's code is imported:
``check_deployment_names`` does that check, with the same kind of message.

Pure: no Ray, no I/O; the caller passes the text and the name to show for it.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from yaml.nodes import Node

from serve_nb.config import (AUTO_NUM_REPLICAS, DEPLOYMENT_OPTIONS, RAY_ACTOR_OPTION_KEYS, AutoscalingConfig,
                             DeploymentConfig, HTTPOptions, ProxyLocation)
from serve_nb.core.log_format import LoggingConfig
from serve_nb.core.route_prefix import validate_route_prefix
from serve_nb.core.yaml_marks import (INVALID, ConfigError, Entry, Problems, Section, child_path, compose, did_you_mean,
                                      mapping, read_section, sequence, show, value, values)

__all__ = [
    "AppConfig", "ConfigError", "DeployConfig", "DeploymentOverride", "check_deployment_names", "load_config",
    "merge_options",
]

DEFAULT_APP_NAME = "default"
DEFAULT_ROUTE_PREFIX = "/"
#: ``proxy_location`` as a file spells it: Ray Serve's three names, and serve_nb's own name for "Disabled".
PROXY_LOCATIONS: Mapping[str, ProxyLocation] = MappingProxyType({
    "EveryNode": ProxyLocation.EveryNode, "HeadOnly": ProxyLocation.HeadOnly,
    "Disabled": ProxyLocation.NoServer, "NoServer": ProxyLocation.NoServer,
})
#: How files are written: Ray Serve's names only, so Ray Serve can read what serve_nb writes.
_RAY_SPELLING: Mapping[ProxyLocation, str] = MappingProxyType({
    ProxyLocation.EveryNode: "EveryNode", ProxyLocation.HeadOnly: "HeadOnly", ProxyLocation.NoServer: "Disabled",
})

#: Ray Serve's defaults for options serve_nb accepts only as they are (``serve build`` writes these).
_GRPC_DEFAULTS = {"port": 9000, "grpc_servicer_functions": [], "request_timeout_s": None, "enable_reflection": True}
_APP_MOVED = "belongs to one application: Ray Serve's single-application format is no longer read. " \
             "Move it into an entry of 'applications:'."
_HOST_MOVED = "host and port are the same for every application: set them under the top-level http_options."


_TOP = Section(
    "top-level settings", ("proxy_location", "http_options", "logging_config", "applications"),
    {"grpc_options": _GRPC_DEFAULTS, "tracing_config": {"enabled": False},
     "controller_options": None, "target_capacity": None},
    {**dict.fromkeys(("import_path", "runtime_env", "args", "deployments", "route_prefix", "name"), _APP_MOVED),
     "host": _HOST_MOVED, "port": _HOST_MOVED},
)
_APP = Section(
    "application settings",
    ("name", "route_prefix", "import_path", "args", "runtime_env", "logging_config", "deployments"),
    {"external_scaler_enabled": False, "autoscaling_policy": None},
    {"host": _HOST_MOVED, "port": _HOST_MOVED},
)
_DEPLOYMENT = Section(
    "deployment options",
    # The option table's rows, but 'version': a file overrides settings; the code's version is the code's.
    tuple(name for name in DEPLOYMENT_OPTIONS if name != "version"),
    {"placement_group_bundles": None, "placement_group_strategy": "PACK", "placement_group_bundle_label_selector": None,
     "backpressure_config": {"status_code": 503, "retry_after_s": None},
     "request_router_config": {  # serve_nb routes by power of two choices, as Ray Serve's default router
         "request_router_class": "ray.serve._private.request_router:PowerOfTwoChoicesRequestRouter",
         "request_router_kwargs": {}},
     "gang_scheduling_config": None, "deployment_actors": [], "rolling_update_percentage": None,
     "max_surge_percent": None},  # serve_nb's rolling update starts new replicas first: not Ray Serve's default
    {"route_prefix": "set route_prefix on the application, not on a deployment.",
     "version": "Ray Serve's config files have no version: a deployment's version comes from its code.",
     "max_concurrent_queries": "renamed max_ongoing_requests in Ray Serve 2.x (which now ignores the old name)."},
)
_HTTP = Section(
    "HTTP options", tuple(f.name for f in dataclasses.fields(HTTPOptions) if f.name != "location"),
    dict.fromkeys(("ssl_keyfile", "ssl_certfile", "ssl_keyfile_password", "ssl_ca_certs")),
    {"location": "set the top-level proxy_location instead (Ray Serve's key for where proxies run)."},
)
_AUTOSCALING = Section(
    "autoscaling settings", tuple(f.name for f in dataclasses.fields(AutoscalingConfig)),
    {"smoothing_factor": 1.0, "upscale_smoothing_factor": None, "downscale_smoothing_factor": None,
     "aggregation_function": "mean", "policy": {  # serve_nb's policy is Ray Serve's default one
         "policy_function": "ray.serve.autoscaling_policy:default_autoscaling_policy", "policy_kwargs": {}}},
    {"target_num_ongoing_requests_per_replica": "renamed target_ongoing_requests in Ray Serve 2.x."},
)
_ACTOR = Section("Ray actor options", RAY_ACTOR_OPTION_KEYS, {"label_selector": None, "fallback_strategy": None}, {})


@dataclass(frozen=True)
class DeploymentOverride:
    """One entry of an application's ``deployments:``: options replacing those of deployment ``name`` in the code.

    ``options`` holds what the file sets (never ``name``), already checked as ``@serve.deployment`` checks
    them; Ray Serve keys accepted at their defaults are left out, as they change nothing. ``line`` is where
    the entry starts (0: not from a file). It is provenance, not content: equality ignores it.
    """

    name: str
    options: dict[str, Any]
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class AppConfig:
    """One application of a config file: what to import, how to call it, and what to override.

    ``route_prefix`` None serves the application without HTTP. ``runtime_env`` is the application's: Ray Serve
    merges it under each deployment's ``ray_actor_options["runtime_env"]`` (the deployment's keys winning, and
    ``env_vars`` merged key by key); applying that is the caller's job. ``line`` as in ``DeploymentOverride``.
    """

    name: str
    route_prefix: str | None
    import_path: str
    args: dict[str, Any]
    runtime_env: dict[str, Any]
    deployments: tuple[DeploymentOverride, ...]
    logging_config: dict[str, Any] | None = None  # for its deployments that set none themselves
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class DeployConfig:
    """A whole config file. ``proxy_location`` None and an empty ``http_options`` mean "not given": the
    caller keeps serve_nb's defaults (``http_options`` holds only the keys the file sets, each checked as
    ``HTTPOptions`` checks it). ``logging_config`` (checked as ``LoggingConfig`` checks it; None when not
    given) is the proxies', and each application's that sets none, as in Ray Serve."""

    proxy_location: ProxyLocation | None
    http_options: dict[str, Any]
    logging_config: dict[str, Any] | None
    applications: tuple[AppConfig, ...]


# --------------------------------------------------------------------------- reading


def load_config(text: str, source: str) -> DeployConfig:
    """Read and check a config file's ``text``; ``source`` (its path) names it in messages.

    Raises ConfigError listing every problem, one ``source:line: path: message`` line each.
    """
    problems = Problems(source)
    root = compose(text, problems)
    top = mapping(root, "", problems, "top-level settings")
    if top is None:
        problems.stop()
    known = read_section(top, _TOP, problems)
    location = _proxy_location(known["proxy_location"], problems) if "proxy_location" in known else None
    http = _checked_http_options(known["http_options"], problems) if "http_options" in known else {}
    logging = _logging_config(known.get("logging_config"), problems)
    apps = _applications(known.get("applications"), root, problems)
    problems.raise_if_any()
    return DeployConfig(location, http, logging, apps)


def _proxy_location(entry: Entry, problems: Problems) -> ProxyLocation | None:
    got = value(entry, problems)
    if got is INVALID:
        return None
    if not isinstance(got, str) or got not in PROXY_LOCATIONS:
        shown = got if isinstance(got, str) else show(got)
        problems.add(entry.line, entry.path, f"must be one of EveryNode, HeadOnly, Disabled (got {shown!r})."
                     f"{did_you_mean(str(got), PROXY_LOCATIONS)}")
        return None
    return PROXY_LOCATIONS[got]


def _checked_http_options(entry: Entry, problems: Problems) -> dict[str, Any]:
    """The HTTP options the file sets, each checked by ``HTTPOptions`` itself (so messages match serve.start's)."""
    entries = mapping(entry.node, entry.path, problems, _HTTP.what)
    entries = {} if entries is None else read_section(entries, _HTTP, problems)
    options = values(entries, problems)
    for key, got in options.items():
        try:
            HTTPOptions(**{key: got})
        except (TypeError, ValueError) as exc:
            problems.add(entries[key].line, entries[key].path, str(exc))
    return options


@dataclass(frozen=True)
class _ReadApp:
    """An application as read, with where its name and route prefix are written (for the checks across apps)."""

    app: AppConfig
    path: str
    name_line: int | None  # None: not written, the default
    prefix_line: int | None


def _applications(entry: Entry | None, root: Node, problems: Problems) -> tuple[AppConfig, ...]:
    if entry is None:
        problems.add(root, "applications", "missing: list the applications to deploy, each with at least an "
                                           "import_path (applications: [{import_path: 'text_ml:app'}]).")
        return ()
    items = sequence(entry.node, entry.path, problems, "applications")
    if items is None:
        return ()
    if not items:
        problems.add(entry.line, entry.path, "is empty: list at least one application. (Ray Serve reads an empty list "
                                             "as 'delete every application'; serve_nb refuses it, so that a truncated "
                                             "file cannot take every application down.)")
    apps = [read for item in items if (read := _application(item, problems)) is not None]
    first_named: dict[str, _ReadApp] = {}
    first_routed: dict[str, _ReadApp] = {}
    for read in apps:
        name, prefix = read.app.name, read.app.route_prefix  # "" and None: not valid, or no HTTP
        if name and name in first_named:
            first = first_named[name]
            problems.add(read.name_line or read.app.line, child_path(read.path, "name"),
                         f"application name '{name}'{_default_if(read.name_line)} is already used by {first.path} "
                         f"(line {first.name_line or first.app.line}). Give each application its own name.")
        if prefix is not None and prefix in first_routed:
            first = first_routed[prefix]
            problems.add(read.prefix_line or read.app.line, child_path(read.path, "route_prefix"),
                         f"route prefix '{prefix}'{_default_if(read.prefix_line)} is already used by application "
                         f"'{first.app.name}' (line {first.prefix_line or first.app.line}). Give each application its "
                         "own route_prefix, or route_prefix: null to serve it without HTTP.")
        first_named.setdefault(name, read)
        if prefix is not None:
            first_routed.setdefault(prefix, read)
    return tuple(read.app for read in apps)


def _default_if(line: int | None) -> str:
    return " (the default, as none is given)" if line is None else ""


def _application(item: Entry, problems: Problems) -> _ReadApp | None:
    entries = mapping(item.node, item.path, problems, "application settings")
    if entries is None:
        return None
    known = read_section(entries, _APP, problems)
    name = DEFAULT_APP_NAME
    if "name" in known:
        got = value(known["name"], problems)
        name = got if isinstance(got, str) else ""
        if got is not INVALID and not name:
            problems.add(known["name"].line, known["name"].path, f"must be a non-empty string, got {show(got)}.")
    prefix: str | None = DEFAULT_ROUTE_PREFIX
    if "route_prefix" in known:
        got = value(known["route_prefix"], problems)
        try:
            prefix = validate_route_prefix(got) if got is not INVALID else None
        except ValueError as exc:
            prefix = None  # not checked against the others: its own problem is the one to fix
            problems.add(known["route_prefix"].line, known["route_prefix"].path, str(exc))
    import_path = ""
    if "import_path" in known:
        got = value(known["import_path"], problems)
        wrong = _import_path_problem(got) if got is not INVALID else None
        if wrong:
            problems.add(known["import_path"].line, known["import_path"].path, wrong)
        elif got is not INVALID:
            import_path = got
    else:
        problems.add(item.line, child_path(item.path, "import_path"),
                     "missing: every application names the application object its code binds, e.g. "
                     "'import_path: text_ml:app'.")
    app = AppConfig(name, prefix, import_path, _free_mapping(known.get("args"), problems),
                    _free_mapping(known.get("runtime_env"), problems),
                    _deployments(known.get("deployments"), problems),
                    _logging_config(known.get("logging_config"), problems), item.line)
    return _ReadApp(app, item.path, known["name"].line if "name" in known else None,
                    known["route_prefix"].line if "route_prefix" in known else None)


def _import_path_problem(got: Any) -> str | None:
    """Why ``got`` is not an import path Ray Serve's ``import_attr`` can follow, or None if it is one."""
    example = "as 'module.submodule:app' or 'module.submodule.app', each part a Python identifier"
    if not isinstance(got, str):
        return f"must be a string naming the application to import, {example}; got {show(got)}."
    if got.count(":") > 1:
        return f"may have at most one ':' (between the module and the application), got {got!r}."
    module, _, attr = got.partition(":") if ":" in got else got.rpartition(".")
    if not module or not all(part.isidentifier() for part in (*module.split("."), attr)):
        return f"must name a module and the application in it, {example}; got {got!r}."
    return None


def _logging_config(entry: Entry | None, problems: Problems) -> dict[str, Any] | None:
    """A ``logging_config`` (top-level or an application's), checked as ``LoggingConfig`` checks it; None when not given."""
    got = value(entry, problems) if entry is not None else None
    if got is None or got is INVALID:
        return None
    try:
        return LoggingConfig.parse(got).to_dict()
    except (TypeError, ValueError) as exc:
        problems.add(entry.line, entry.path, str(exc))  # type: ignore[union-attr]
        return None


def _free_mapping(entry: Entry | None, problems: Problems) -> dict[str, Any]:
    """``args`` / ``runtime_env``: any mapping, passed on as it is; ``{}`` when not given."""
    if entry is None:
        return {}
    got = value(entry, problems)
    if got is not INVALID and not isinstance(got, dict):
        problems.add(entry.line, entry.path, f"must be a mapping (key: value lines), got {show(got)}. "
                                             "Leave it out for none.")
    return got if isinstance(got, dict) else {}


def _deployments(entry: Entry | None, problems: Problems) -> tuple[DeploymentOverride, ...]:
    if entry is None:
        return ()
    items = sequence(entry.node, entry.path, problems, "deployment overrides (each with a name)") or []
    overrides: list[DeploymentOverride] = []
    first_line: dict[str, int] = {}
    for item in items:
        override = _deployment(item, problems)
        if override is None:
            continue
        if override.name in first_line:
            problems.add(item.line, child_path(item.path, "name"),
                         f"deployment '{override.name}' is also overridden on line {first_line[override.name]}. "
                         "Merge the two entries into one.")
        first_line.setdefault(override.name, item.line)
        overrides.append(override)
    return tuple(overrides)


#: Options whose value is a mapping of its own, read key by key (so a typo inside is named too).
_NESTED: Mapping[str, Section] = MappingProxyType({"autoscaling_config": _AUTOSCALING, "ray_actor_options": _ACTOR})


def _deployment(item: Entry, problems: Problems) -> DeploymentOverride | None:
    entries = mapping(item.node, item.path, problems, "deployment options")
    if entries is None:
        return None
    known = read_section(entries, _DEPLOYMENT, problems)
    name_entry = known.pop("name", None)
    options: dict[str, Any] = {}
    for key, entry in known.items():
        if key in _NESTED and entry.node.tag != "tag:yaml.org,2002:null":
            nested = mapping(entry.node, entry.path, problems, _NESTED[key].what)
            if nested is not None:
                options[key] = values(read_section(nested, _NESTED[key], problems), problems)
        elif (got := value(entry, problems)) is not INVALID:
            options[key] = got
    _check_options(options, known, problems)
    if name_entry is None:
        problems.add(item.line, child_path(item.path, "name"),
                     "missing: each entry of deployments names the deployment in the code it overrides (name: ...).")
        return None
    name = value(name_entry, problems)
    if name is not INVALID and not (isinstance(name, str) and name):
        problems.add(name_entry.line, name_entry.path, f"must be the name of a deployment in the application's code, "
                                                       f"got {show(name)}.")
    return DeploymentOverride(name, options, item.line) if isinstance(name, str) and name else None


def _check_options(options: dict[str, Any], entries: Mapping[str, Entry], problems: Problems) -> None:
    """Each option through ``DeploymentConfig.from_options``: the checks (and words) of ``@serve.deployment``."""
    replicas = options.get("num_replicas")
    if isinstance(replicas, int) and options.get("autoscaling_config") is not None:
        problems.add(entries["num_replicas"].line, entries["num_replicas"].path,
                     "num_replicas and autoscaling_config cannot both be set; remove one. (num_replicas: auto "
                     "autoscales with the settings in autoscaling_config.)")
    for key, got in options.items():
        checked = {key: got}
        if key == "autoscaling_config" and replicas == AUTO_NUM_REPLICAS:
            checked["num_replicas"] = AUTO_NUM_REPLICAS  # "auto" fills in defaults the settings may rely on
        try:
            DeploymentConfig.from_options(checked)
        except (TypeError, ValueError) as exc:
            problems.add(entries[key].line, entries[key].path, str(exc))


def check_deployment_names(app: AppConfig, known: Iterable[str], source: str) -> None:
    """Raise ConfigError if an override of ``app`` names no deployment of its code (``known``: their names).

    Only possible once the application is imported and built; run it before anything is deployed.
    """
    names = list(dict.fromkeys(known))
    problems = Problems(source)
    for i, override in enumerate(app.deployments):
        if override.name not in names:
            problems.add(override.line, f"applications['{app.name}'].deployments[{i}].name",
                         f"no deployment named '{override.name}' in {app.import_path}."
                         f"{did_you_mean(override.name, names)} Its deployments: {', '.join(names) or 'none'}.")
    problems.raise_if_any()


# --------------------------------------------------------------------------- applying


def merge_options(code_options: Mapping[str, Any], override: DeploymentOverride) -> dict[str, Any]:
    """The options a deployment runs with when a config file overrides its code: the file's over the code's.

    As Ray Serve applies a file: each option the file sets replaces the code's value whole, dicts included
    (a file's ``ray_actor_options: {num_gpus: 1}`` drops the code's ``num_cpus``; ``user_config`` and
    ``autoscaling_config`` likewise), because the file states what runs rather than patching code its reader
    may not see. Replica counts decide between fixed and autoscaled: a number for ``num_replicas`` in the file
    removes the code's ``autoscaling_config``, and an ``autoscaling_config`` in the file (the file not setting
    ``num_replicas``) removes the code's ``num_replicas``, an ``"auto"`` too; ``autoscaling_config: null``
    removes a code ``"auto"`` as well, since it turns autoscaling off. ``num_replicas: auto`` in the file keeps
    the code's ``autoscaling_config``, whose settings apply over the "auto" defaults.

    Options neither sets stay out: ``DeploymentConfig.from_options`` fills in the defaults.
    """
    merged = copy.deepcopy(dict(code_options))
    given = override.options
    if isinstance(given.get("num_replicas"), int):
        merged.pop("autoscaling_config", None)
    if "autoscaling_config" in given and "num_replicas" not in given:
        if given["autoscaling_config"] is not None or merged.get("num_replicas") == AUTO_NUM_REPLICAS:
            merged.pop("num_replicas", None)
    merged.update(copy.deepcopy(given))
    return merged
