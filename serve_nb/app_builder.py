"""From a bound ``Application`` to what the controller deploys: the deployment graph, then one spec per
deployment (its code and arguments pickled, its version hashed).

``serve.run`` and config files (``serve_nb.deploy_config``) both build here; a config file's per-deployment
options are applied to the graph before the specs are made, so versions and replicas see the final options.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from serve_nb.common.messages import DeploymentSpec
from serve_nb.core.graph import AppGraph, build_graph
from serve_nb.core.log_format import LoggingConfig
from serve_nb.core.versions import args_version, code_version, replica_version
from serve_nb.deployment import Application, Deployment


#: Given a deployment's name and the options set in its code, the options to deploy it with (None: as in code).
OptionsFor = Callable[[str, dict[str, Any]], "dict[str, Any] | None"]


def build_app(
    target: Application, app_name: str, options_for: OptionsFor | None = None,
    runtime_env: Mapping[str, Any] | None = None, check_names: Callable[[Iterable[str]], None] | None = None,
    logging_config: LoggingConfig | None = None,
) -> tuple[AppGraph, list[DeploymentSpec]]:
    """The graph and specs of ``target`` deployed as ``app_name``. ``check_names`` sees the deployments' names
    first (a config file names deployments it overrides); ``options_for`` replaces a deployment's options;
    ``runtime_env`` is the application's, for each deployment whose ``ray_actor_options`` name none; so is
    ``logging_config``, for each deployment that sets none (Ray Serve's precedence)."""
    from serve_nb.common.serialization import find_instances

    graph = build_graph(target, app_name, scan=lambda value: find_instances(value, (Application, Deployment)))
    if check_names is not None:
        check_names(list(graph.nodes))
    for name, node in graph.nodes.items():
        options = options_for(name, node.deployment.options_in_code) if options_for is not None else None
        if options is not None:
            node.deployment = Deployment(node.deployment.func_or_class, {**options, "name": name})
    if runtime_env:
        for node in graph.nodes.values():
            actor_options = node.deployment.config.ray_actor_options
            if "runtime_env" not in actor_options:
                node.deployment = node.deployment.options(
                    ray_actor_options={**actor_options, "runtime_env": dict(runtime_env)}, name=node.name
                )
    if logging_config is not None:
        for node in graph.nodes.values():
            if node.deployment.config.logging_config is None:
                node.deployment = node.deployment.options(logging_config=logging_config, name=node.name)
    return graph, build_specs(graph, app_name)


def build_specs(graph: AppGraph, app_name: str) -> list[DeploymentSpec]:
    """One spec per deployment; a bound Application inside arguments is replaced by a handle to it."""
    from serve_nb.common.serialization import dumps, dumps_replacing, user_code_by_value
    from serve_nb.data.handle import DeploymentHandle

    def handle_for(obj: Any) -> DeploymentHandle | None:
        """A bound Application inside arguments travels as a handle to its deployment."""
        name = graph.names.get(id(obj)) if isinstance(obj, Application) else None
        return None if name is None else DeploymentHandle(name, app_name)

    def dumps_args(value: Any) -> bytes:
        return dumps_replacing(value, handle_for)

    specs = []
    for node in graph.nodes.values():
        dep = node.deployment
        with user_code_by_value(dep.func_or_class):
            try:
                def_blob = dumps(dep.func_or_class)
            except Exception as exc:
                raise TypeError(f"Deployment '{node.name}' cannot be serialized to send to its replicas: {exc}") from exc
            try:
                args_blob = dumps_args((node.args, node.kwargs))
            except Exception as exc:
                raise TypeError(
                    f"The arguments bound to deployment '{node.name}' cannot be serialized: {exc}. "
                    "Pass picklable values (or create the object inside the constructor)."
                ) from exc
        version = replica_version(
            code_version(dep.func_or_class, dumps), args_version(node.args, node.kwargs, dumps_args), dep.config
        )
        specs.append(DeploymentSpec(node.name, def_blob, args_blob, dep.config, version, dep.is_class))
    return specs
