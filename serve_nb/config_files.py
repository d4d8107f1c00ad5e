"""Apply a Ray Serve config file (YAML or a dict in its shape): what ``serve_nb run/deploy CONFIG`` and
``serve.deploy_config`` do.

Everything is checked before the cluster is touched: the schema (``core.deploy_schema``, errors name the
file, line and field), then each application is imported and built, with its per-deployment overrides
applied (an unknown deployment name is an error at its line). Only then are the applications deployed,
and applications not in the config deleted: applying a config is declarative, and applying the same one
again restarts nothing (serve_nb's code versions see unchanged code).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from serve_nb.app_builder import build_app
from serve_nb.core.log_format import LoggingConfig
from serve_nb.core.deploy_schema import (
    AppConfig, ConfigError, DeployConfig, DeploymentOverride, check_deployment_names, load_config, merge_options,
)
from serve_nb.core.yaml_marks import ConfigProblem
from serve_nb.core.graph import AppGraph
from serve_nb.deployment import Application, Deployment

logger = logging.getLogger("serve_nb")
#: Where the last applied config of each application is kept (Ray's key-value store), for ``serve_nb config``.
CONFIG_KEY_PREFIX = b"serve_nb_applied_config:"


@dataclasses.dataclass
class BuiltApp:
    """One application of a config, imported and built, not yet deployed."""

    config: AppConfig
    graph: AppGraph
    specs: list[Any]


def read_config(config: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[DeployConfig, Path]:
    """Parse and check a config file (or a dict in its shape); also the directory its imports resolve from."""
    if isinstance(config, Mapping):
        import yaml

        return load_config(yaml.safe_dump(dict(config), sort_keys=False), "<config dict>"), Path.cwd()
    path = Path(config)
    try:
        text = path.read_text()
    except OSError as exc:
        raise FileNotFoundError(f"cannot read the config file {path}: {exc.strerror or exc}.") from None
    return load_config(text, str(path)), path.resolve().parent


def build_apps(config: DeployConfig, source: str, base_dir: Path) -> list[BuiltApp]:
    """Import and build every application of ``config``; raises ConfigError (file, line, field) on the first problem."""
    if str(base_dir) not in sys.path:
        sys.path.insert(0, str(base_dir))  # import paths are relative to the config file, as `serve run` resolves them
    built = []
    for index, app in enumerate(config.applications):
        target = application_of(app, Where(source, app.line, f"applications[{index}]"))
        by_name = {d.name: d for d in app.deployments}

        def options_for(name: str, in_code: dict[str, Any], by_name: dict[str, DeploymentOverride] = by_name) -> Any:
            return merge_options(in_code, by_name[name]) if name in by_name else None

        def check_names(names: Any, app: AppConfig = app) -> None:
            check_deployment_names(app, names, source)

        app_logging = app.logging_config or config.logging_config  # the top-level one, as in Ray Serve
        graph, specs = build_app(target, app.name, options_for, app.runtime_env or None, check_names,
                                 LoggingConfig.parse(app_logging) if app_logging else None)
        built.append(BuiltApp(app, graph, specs))
    return built


@dataclasses.dataclass(frozen=True)
class Where:
    """Where an application sits in its config file: errors found importing it point there."""

    source: str
    line: int
    path: str

    def error(self, field: str, message: str) -> ConfigError:
        return ConfigError([ConfigProblem(self.source, self.line, f"{self.path}.{field}" if self.path else field,
                                          " ".join(message.split()))])


def application_of(app: AppConfig, where: Where) -> Application:
    """The Application ``import_path`` names: an Application, or a builder function called with ``args``."""
    target = import_attr(app.import_path, where)
    if isinstance(target, Application):
        if app.args:
            raise where.error("args", f"'{app.import_path}' is an Application, not a builder function; args are "
                                      "passed only to a function that returns one.")
        return target
    if isinstance(target, Deployment):
        raise where.error("import_path", f"'{app.import_path}' is a Deployment; point it at '{target.name}.bind(...)' "
                                         "(an Application) or at a builder function.")
    if not callable(target):
        raise where.error("import_path", f"'{app.import_path}' is a {type(target).__name__}, not an Application or a "
                                         "function that builds one.")
    built = target(_builder_argument(target, app.args, where))
    if not isinstance(built, Application):
        raise where.error("import_path", f"the builder '{app.import_path}' returned a {type(built).__name__}; it must "
                                         "return an Application (Deployment.bind(...)).")
    return built


def import_attr(import_path: str, where: Where) -> Any:
    """``module.sub:attr`` or ``module.sub.attr``, imported; errors say what could not be found."""
    module_name, sep, attr = import_path.partition(":")
    if not sep:
        module_name, _, attr = import_path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - the user's module failed to import: show why, briefly
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise where.error("import_path", f"cannot import '{module_name}': {type(exc).__name__}: {detail}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise where.error("import_path", f"module '{module_name}' has no attribute '{attr}'.") from None


def _builder_argument(builder: Any, args: dict[str, Any], where: Where) -> Any:
    """The args dict, or the pydantic model the builder's parameter is annotated with, built from it."""
    params = list(inspect.signature(builder).parameters.values())
    annotation = params[0].annotation if params else inspect.Parameter.empty
    if isinstance(annotation, str):  # postponed annotations: resolve them
        annotation = inspect.get_annotations(builder, eval_str=True).get(params[0].name, annotation)
    validate = getattr(annotation, "model_validate", None) if inspect.isclass(annotation) else None
    if validate is None:
        return dict(args)
    try:
        return validate(args)
    except Exception as exc:  # noqa: BLE001 - pydantic's ValidationError lists the fields
        raise where.error("args", str(exc)) from None


def deploy_config(config: str | os.PathLike[str] | Mapping[str, Any], *, wait: bool = True) -> dict[str, Any]:
    """Apply a Ray Serve config (a file path or a dict in its shape): deploy its applications (unchanged ones
    keep their replicas), delete the applications it does not list, and return a handle per application.
    ``wait``: until every application runs (DeployError if one fails)."""
    parsed, base_dir = read_config(config)
    source = str(config) if not isinstance(config, Mapping) else "<config dict>"
    return apply(parsed, build_apps(parsed, source, base_dir), wait=wait)


def apply(config: DeployConfig, built: list[BuiltApp], *, wait: bool = True) -> dict[str, Any]:
    """Deploy applications built from ``config`` and delete the others; a handle per application."""
    from serve_nb import api

    api.start(proxy_location=config.proxy_location, http_options=config.http_options or None,
              logging_config=config.logging_config)
    handles = {app.config.name: api.deploy_built(app.graph, app.specs, app.config.name, app.config.route_prefix, wait=False)
               for app in built}
    gone = set(api.status().applications) - set(handles)
    for name in gone:
        api.delete(name)
    forget_applied(list(gone))
    _record(config)
    if wait:
        for app in built:
            api.wait_for_app(app.config.name, app.config.route_prefix)
    return handles


def describe_changes(before: list[BuiltApp], after: list[BuiltApp]) -> str:
    """One line: per application, which deployments roll (new version) and which keep their replicas."""
    old = {(app.config.name, spec.name): spec.version for app in before for spec in app.specs}
    parts = []
    for app in after:
        rolled = [s.name for s in app.specs if old.get((app.config.name, s.name)) != s.version]
        kept = [s.name for s in app.specs if s.name not in rolled]
        what = (f"{', '.join(rolled)} updated" if rolled else "nothing changed") + (
            f"; {', '.join(kept)} unchanged" if rolled and kept else "")
        parts.append(f"'{app.config.name}': {what}")
    gone = {app.config.name for app in before} - {app.config.name for app in after}
    parts += [f"'{name}' deleted" for name in sorted(gone)]
    return "; ".join(parts)


def forget_user_modules(base_dir: Path) -> None:
    """Drop the user's modules (files under ``base_dir``) from ``sys.modules``, so a reload imports the saved code."""
    root = str(base_dir.resolve())
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) or ""
        if path.startswith(root + os.sep) and "site-packages" not in path:
            del sys.modules[name]
    importlib.invalidate_caches()


def build_config(import_path: str) -> str:
    """A config file (YAML) for the application at ``import_path``, with each deployment's options as set in code."""
    from serve_nb.core.deploy_dump import build_config_text

    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    target = application_of(AppConfig("default", "/", import_path, {}, {}, ()), Where("serve_nb build", 0, ""))
    graph, _ = build_app(target, "default")
    deployments = tuple(DeploymentOverride(name, node.deployment.options_in_code, 0) for name, node in graph.nodes.items())
    return build_config_text([AppConfig("default", "/", import_path, {}, {}, deployments)])


def forget_applied(app_names: list[str]) -> None:
    """Drop the recorded configs of applications that are gone."""
    from serve_nb import ray_private
    from serve_nb.common.names import NAMESPACE

    for name in app_names:
        ray_private.kv_delete(CONFIG_KEY_PREFIX + name.encode(), NAMESPACE)


def _record(config: DeployConfig) -> None:
    from serve_nb import ray_private
    from serve_nb.common.names import NAMESPACE

    for app in config.applications:
        ray_private.kv_put(CONFIG_KEY_PREFIX + app.name.encode(), json.dumps(app_as_dict(app)).encode(), NAMESPACE)


def app_as_dict(app: AppConfig) -> dict[str, Any]:
    """One application of a config in the file's shape (what ``serve_nb config`` prints)."""
    out: dict[str, Any] = {"name": app.name, "route_prefix": app.route_prefix, "import_path": app.import_path}
    if app.args:
        out["args"] = app.args
    if app.runtime_env:
        out["runtime_env"] = app.runtime_env
    if app.deployments:
        out["deployments"] = [{"name": d.name, **d.options} for d in app.deployments]
    return out


def applied_configs(app_names: list[str]) -> dict[str, dict[str, Any]]:
    """The config each of ``app_names`` was last deployed with from a config file (apps deployed otherwise have none)."""
    from serve_nb import ray_private
    from serve_nb.common.names import NAMESPACE

    found = {}
    for name in app_names:
        raw = ray_private.kv_get(CONFIG_KEY_PREFIX + name.encode(), NAMESPACE)
        if raw is not None:
            found[name] = json.loads(raw)
    return found
