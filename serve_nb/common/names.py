"""Names every serve_nb process agrees on: the Ray namespace, actor names, how they are parsed back.

The controller names replicas and proxies so that a restarted controller can find them again by
name; routers and the caller only ever look the controller up by its name. One module, so the
control plane and the data plane share these without importing each other.
"""

from __future__ import annotations

import secrets

from serve_nb.types import DeploymentID

NAMESPACE = "serve_nb"
CONTROLLER_NAME = "serve_nb_controller"
REPLICA_PREFIX = "SERVE_NB_REPLICA::"
PROXY_PREFIX = "SERVE_NB_PROXY::"


def replica_actor_name(dep: DeploymentID, replica_id: str) -> str:
    return f"{REPLICA_PREFIX}{dep.app}#{dep.name}#{replica_id}"


def parse_replica_actor_name(name: str) -> tuple[DeploymentID, str] | None:
    """(deployment, replica id) of a replica actor's name; None for any other name."""
    if not name.startswith(REPLICA_PREFIX):
        return None
    parts = name[len(REPLICA_PREFIX) :].split("#")
    if len(parts) != 3:
        return None
    app, deployment, replica_id = parts
    return DeploymentID(app, deployment), replica_id


def proxy_actor_name(node_id: str) -> str:
    # A fresh suffix per start: the name of a proxy just killed may not be free yet.
    return f"{PROXY_PREFIX}{node_id}#{secrets.token_hex(3)}"


def parse_proxy_actor_name(name: str) -> str | None:
    """The node id in a proxy actor's name; None for any other name."""
    if not name.startswith(PROXY_PREFIX):
        return None
    return name[len(PROXY_PREFIX) :].split("#")[0]
