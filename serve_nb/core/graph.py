"""Flatten an ``Application`` bind graph into deployments plus one ingress.

Applications bound into another's constructor arguments, anywhere inside them, become deployments
of the app; the caller finds them with the ``scan`` function it passes (serve_nb's walks any picklable
object, as Ray Serve's does; ``scan_containers`` here walks lists, tuples, sets and dicts) and later
replaces each by a handle to the deployment ``AppGraph.names`` gives it. Each distinct bound
Application is one deployment; when two would share a name, the later ones are renamed ``Name_1``,
``Name_2``... (Ray Serve's rule), and ``AppGraph.renamed`` says so. Pure: no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from serve_nb.deployment import Application, Deployment

#: Finds the Applications (and unbound Deployments, an error) inside a value, each once, in order.
Scan = Callable[[Any], list[Any]]


@dataclass
class DeploymentNode:
    """One deployment of an app with its constructor arguments as bound (Applications still in them)."""

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
    #: ``id(application)`` -> the name of its deployment (what a handle replacing it must name). Valid while
    #: the caller holds the root Application, which keeps every bound one alive through its arguments.
    names: dict[int, str] = field(default_factory=dict)
    #: (original name, new name) of deployments renamed because another had the name first.
    renamed: list[tuple[str, str]] = field(default_factory=list)


class GraphError(ValueError):
    """The bind graph is malformed (a cycle, or a deployment passed without ``.bind()``)."""


def scan_containers(value: Any) -> list[Any]:
    """Applications and Deployments inside lists, tuples, sets and dicts (keys and values), in order."""
    found: list[Any] = []
    seen: set[int] = set()

    def walk(v: Any) -> None:
        if isinstance(v, (Application, Deployment)):
            if id(v) not in seen:
                seen.add(id(v))
                found.append(v)
        elif isinstance(v, (list, tuple, set, frozenset)):
            for item in v:
                walk(item)
        elif isinstance(v, dict):
            for k, item in v.items():
                walk(k)
                walk(item)

    walk(value)
    return found


def build_graph(app: Application, app_name: str, scan: Scan = scan_containers) -> AppGraph:
    """Walk ``app`` depth-first, children first; raise GraphError on a cycle or an unbound deployment."""
    if not isinstance(app, Application):
        raise TypeError(
            f"Expected an Application (a bound deployment, e.g. MyDeployment.bind()), got "
            f"{type(app).__name__}." + (" Call .bind() on the deployment first." if isinstance(app, Deployment) else "")
        )
    graph = AppGraph(ingress="", nodes={})
    visiting: set[int] = set()

    def unique(name: str) -> str:
        if name not in graph.nodes:
            return name
        suffix = 1
        while f"{name}_{suffix}" in graph.nodes:
            suffix += 1
        graph.renamed.append((name, f"{name}_{suffix}"))
        return f"{name}_{suffix}"

    def visit(node: Application) -> str:
        if id(node) in graph.names:
            return graph.names[id(node)]
        if id(node) in visiting:
            raise GraphError(f"The bind graph has a cycle through deployment '{node.deployment.name}'.")
        visiting.add(id(node))
        children: list[str] = []
        for found in scan((node._args, node._kwargs)):
            if not isinstance(found, Application):
                raise GraphError(
                    f"Deployment '{found.name}' was passed as an argument without .bind(); "
                    f"pass {found.name}.bind(...) to get a handle to it."
                )
            child = visit(found)
            if child not in children:
                children.append(child)
        visiting.discard(id(node))
        name = unique(node.deployment.name)
        graph.names[id(node)] = name
        graph.nodes[name] = DeploymentNode(name, node.deployment, node._args, node._kwargs, children)
        return name

    graph.ingress = visit(app)
    return graph
