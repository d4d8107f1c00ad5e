"""Flatten an ``Application`` bind graph into deployments plus one ingress.

Nested Applications in constructor arguments (inside lists, tuples and dicts) are replaced by
handles made with the ``make_handle`` factory the caller passes in, so this module stays pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from serve_nb.deployment import Application, Deployment

HandleFactory = Callable[[str, str], Any]


@dataclass
class DeploymentNode:
    """One deployment of an app with its constructor arguments, handles already substituted."""

    name: str
    deployment: Deployment
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    children: list[str] = field(default_factory=list)


@dataclass
class AppGraph:
    """Deployments in dependency order (children before parents); ``ingress`` is the root."""

    ingress: str
    nodes: dict[str, DeploymentNode]


class GraphError(ValueError):
    """The bind graph is malformed (e.g. two different deployments share a name)."""


def _same_binding(a: Application, b: Application) -> bool:
    if a.deployment is not b.deployment:
        return False
    try:
        return bool(a._args == b._args and a._kwargs == b._kwargs)
    except Exception:  # arguments whose == raises or is ambiguous (arrays): treat as different
        return False


def build_graph(app: Application, app_name: str, make_handle: HandleFactory) -> AppGraph:
    """Walk ``app`` depth-first; raise GraphError on conflicting names or cycles."""
    if not isinstance(app, Application):
        raise TypeError(
            f"Expected an Application (a bound deployment, e.g. MyDeployment.bind()), got "
            f"{type(app).__name__}." + (" Call .bind() on the deployment first." if isinstance(app, Deployment) else "")
        )
    nodes: dict[str, DeploymentNode] = {}
    seen: dict[str, Application] = {}
    visiting: set[int] = set()

    def substitute(value: Any, parent: list[str]) -> Any:
        if isinstance(value, Application):
            name = visit(value)
            if name not in parent:
                parent.append(name)
            return make_handle(name, app_name)
        if isinstance(value, Deployment):
            raise GraphError(
                f"Deployment '{value.name}' was passed as an argument without .bind(); "
                f"pass {value.name}.bind(...) to get a handle to it."
            )
        if isinstance(value, list):
            return [substitute(v, parent) for v in value]
        if isinstance(value, tuple):
            items = [substitute(v, parent) for v in value]
            return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
        if isinstance(value, dict):
            return {k: substitute(v, parent) for k, v in value.items()}
        return value

    def visit(node: Application) -> str:
        name = node.deployment.name
        if id(node) in visiting:
            raise GraphError(f"The bind graph has a cycle through deployment '{name}'.")
        if name in seen:
            if seen[name] is node or _same_binding(seen[name], node):
                return name
            raise GraphError(
                f"Two different deployments in application '{app_name}' are named '{name}'. "
                f"Give one a distinct name with .options(name=...)."
            )
        seen[name] = node
        visiting.add(id(node))
        children: list[str] = []
        args = tuple(substitute(a, children) for a in node._args)
        kwargs = {k: substitute(v, children) for k, v in node._kwargs.items()}
        visiting.discard(id(node))
        nodes[name] = DeploymentNode(name, node.deployment, args, kwargs, children)
        return name

    ingress = visit(app)
    return AppGraph(ingress=ingress, nodes=nodes)
