"""Ray Serve's config file written from a ``DeployConfig``: ``serve_nb build`` and ``dump_config``, which
``deploy_schema.load_config`` reads back to an equal config. Pure: no Ray, no I/O."""

from __future__ import annotations

import dataclasses
import datetime
from enum import Enum
from typing import Any, Iterable, Mapping

import yaml

from serve_nb.config import AutoscalingConfig, HTTPOptions, ProxyLocation
from serve_nb.core.deploy_schema import _RAY_SPELLING, AppConfig, DeployConfig, load_config
from serve_nb.core.yaml_marks import child_path

__all__ = ["build_config_text", "dump_config"]




class _Dumper(yaml.SafeDumper):
    """Ray Serve's layout for config files: a blank line between top-level sections."""

    def write_line_break(self, data: str | None = None) -> None:
        super().write_line_break(data)
        if len(self.indents) == 1:
            super().write_line_break()


def dump_config(config: DeployConfig) -> str:
    """``config`` as a config file in Ray Serve's layout; ``load_config`` reads it back to an equal config.

    Raises TypeError naming the field if a value cannot be written as YAML (an object from code, say).
    """
    document: dict[str, Any] = {}
    if config.proxy_location is not None:
        document["proxy_location"] = _RAY_SPELLING[ProxyLocation(config.proxy_location)]
    if config.http_options:
        document["http_options"] = config.http_options
    if config.logging_config is not None:
        document["logging_config"] = config.logging_config
    document["applications"] = [_app_document(app) for app in config.applications]
    return yaml.dump(_plain(document, ""), Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=100)


def _app_document(app: AppConfig) -> dict[str, Any]:
    document: dict[str, Any] = {"name": app.name, "route_prefix": app.route_prefix, "import_path": app.import_path,
                                "runtime_env": app.runtime_env}  # written even when empty, as serve build does
    if app.args:
        document["args"] = app.args
    if app.logging_config is not None:
        document["logging_config"] = app.logging_config
    if app.deployments:
        document["deployments"] = [{"name": d.name, **d.options} for d in app.deployments]
    return document


def _plain(got: Any, path: str) -> Any:
    """``got`` as YAML-ready values; what serve_nb code may hold (AutoscalingConfig, enums, tuples) converted."""
    if isinstance(got, AutoscalingConfig):  # its settings that differ from the defaults, as serve build writes
        default = AutoscalingConfig()
        return {f.name: getattr(got, f.name) for f in dataclasses.fields(got)
                if getattr(got, f.name) != getattr(default, f.name)}
    if isinstance(got, Enum):
        return got.value
    if isinstance(got, Mapping):
        return {key: _plain(item, child_path(path, str(key))) for key, item in got.items()}
    if isinstance(got, (list, tuple)):
        return [_plain(item, child_path(path, i)) for i, item in enumerate(got)]
    if got is None or isinstance(got, (str, int, float, bytes, datetime.date)):
        return got
    raise TypeError(f"{path}: a {type(got).__name__} cannot be written to a config file. Use plain values: "
                    "mappings, lists, strings, numbers, booleans and null.")


def build_config_text(apps: Iterable[AppConfig], http_options: Mapping[str, Any] | None = None) -> str:
    """The config file ``serve_nb build`` writes for ``apps``, in Ray Serve's format (Ray Serve reads it too,
    ignoring serve_nb's own keys).

    Without ``http_options`` it writes serve_nb's default host and port: Ray Serve would listen on every
    interface (0.0.0.0) for a file that names none, serve_nb on 127.0.0.1 only, and a file should not mean
    different things to the two. The text is read back before it is returned, so what this writes
    ``load_config`` accepts: a value it would refuse raises ConfigError here (source ``serve_nb build``).
    """
    if http_options is None:
        http_options = {"host": HTTPOptions().host, "port": HTTPOptions().port}
    text = _HEADER + dump_config(DeployConfig(ProxyLocation.EveryNode, dict(http_options), None, tuple(apps)))
    load_config(text, "serve_nb build")
    return text


_HEADER = "# Written by serve_nb build, in Ray Serve's config file format (serve deploy / serve run).\n\n"
