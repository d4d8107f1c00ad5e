"""serve_nb: from a notebook cell to a scalable endpoint.

Ray Serve's model (deployments, replicas, applications, handles) on Ray core, usable with
``import serve_nb as serve``. Ray is imported lazily: importing serve_nb costs little.
"""

from __future__ import annotations

from typing import Any

from serve_nb import exceptions, feed
from serve_nb.api import (
    connect,
    delete,
    get_app_handle,
    get_deployment_handle,
    run,
    scale_deployment,
    set_autoscaling,
    shutdown,
    start,
    status,
)
from serve_nb.batching import batch
from serve_nb.config import AutoscalingConfig, HTTPOptions
from serve_nb.config_files import deploy_config
from serve_nb.deployment import Application, Deployment, deployment
from serve_nb.ingress import ingress
from serve_nb.multiplex import multiplexed
from serve_nb.data.context import ReplicaContext, get_multiplexed_model_id, get_replica_context
from serve_nb.types import ApplicationStatus, DeploymentStatus, ServeStatus

__version__ = "0.1.0"

_LAZY = {
    "widgets": "serve_nb.widgets",
    "DeploymentHandle": "serve_nb.data.handle",
    "DeploymentResponse": "serve_nb.data.handle",
    "DeploymentResponseGenerator": "serve_nb.data.handle",
}


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext serve_nb``: registers %%serve, %serve_connect, %serve_status, %serve_delete, %serve_shutdown."""
    from serve_nb.notebook.magic import load

    load(ipython)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'serve_nb' has no attribute {name!r}")
    import importlib

    if module == f"serve_nb.{name}":
        return importlib.import_module(module)
    return getattr(importlib.import_module(module), name)


__all__ = [
    "Application",
    "connect",
    "ApplicationStatus",
    "AutoscalingConfig",
    "batch",
    "Deployment",
    "DeploymentHandle",
    "DeploymentResponse",
    "DeploymentResponseGenerator",
    "DeploymentStatus",
    "HTTPOptions",
    "ReplicaContext",
    "ServeStatus",
    "delete",
    "deploy_config",
    "deployment",
    "exceptions",
    "feed",
    "get_app_handle",
    "get_deployment_handle",
    "get_multiplexed_model_id",
    "get_replica_context",
    "ingress",
    "multiplexed",
    "run",
    "scale_deployment",
    "set_autoscaling",
    "shutdown",
    "start",
    "status",
]
