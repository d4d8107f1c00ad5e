"""Decisions about the nodes of a multi-host cluster, as pure functions: where the controller goes, which
address a proxy is reachable at, where a replacement replica may go while a node does not answer, and
how long a proxy that cannot start waits before the next try.

Nothing here calls Ray: the callers pass what Ray told them (``ray.nodes()`` entries, ``NodeInfo``).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Collection, Mapping, Sequence

from serve_nb.core.resources import HEAD_NODE_RESOURCE, NodeInfo, fits

#: Hosts that mean "every interface": a proxy bound there is reached at its node's own address.
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})

#: A proxy that failed to start is tried again after this, doubling at each failure in a row up to
#: ``PROXY_RETRY_MAX_S``: soon enough to pick up a freed port, rare enough not to flood the logs.
PROXY_RETRY_S = 5.0
PROXY_RETRY_MAX_S = 60.0


def head_node_id(nodes: Sequence[Mapping[str, Any]]) -> str | None:
    """The alive head node's id among ``ray.nodes()`` entries (it alone holds ``node:__internal_head__``;
    a public way to find it, also over ``ray://`` and on a remote ``ray start`` cluster); None if none."""
    for node in nodes:
        if node.get("Alive") and HEAD_NODE_RESOURCE in node.get("Resources", {}):
            return str(node["NodeID"])
    return None


def is_wildcard(host: str) -> bool:
    """True if a socket bound to ``host`` listens on every interface of its machine."""
    return host in WILDCARD_HOSTS


def host_port(host: str, port: int) -> str:
    """``host:port``, IPv6 hosts in brackets (as a URL needs them)."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def proxy_address(host: str, port: int, node_ip: str) -> str:
    """Where a proxy bound to ``host:port`` on a node with address ``node_ip`` can be reached.

    A wildcard host is reached at the node's own address (the configured ``0.0.0.0`` is no address at
    all); any other host is where the proxy listens (a loopback one only from its own machine)."""
    if is_wildcard(host) and node_ip:
        return host_port(node_ip, port)
    return host_port(host or "127.0.0.1", port)


def http_address(host: str, port: int, nodes: Sequence[NodeInfo], node_id: str | None = None) -> str:
    """The one address status and the widget link to: the proxy on ``node_id`` (the controller's, i.e.
    the head node), else the head's, else any; with a loopback host it is reachable only from that machine."""
    chosen = next((n for n in nodes if n.node_id == node_id), None) or next((n for n in nodes if n.is_head), None)
    return proxy_address(host, port, chosen.ip if chosen is not None else "")


def replacement_node(nodes: Sequence[NodeInfo], unresponsive: Collection[str], need: Mapping[str, float],
                     per_node: Mapping[str, int]) -> str | None:
    """Where a new replica should go while some nodes do not answer, or None to leave it to Ray.

    Ray's scheduler still sees a frozen node as alive (with free resources, as last reported) until it
    declares it dead, tens of seconds later; a replica placed there stays STARTING all that time. So
    while ``unresponsive`` is not empty, a new replica is steered to the answering node that can hold
    it and has the fewest replicas of its deployment (``per_node``); with nothing unresponsive, or no
    answering node that fits, Ray decides as usual."""
    if not unresponsive:
        return None
    able = [n for n in nodes if n.node_id not in unresponsive and fits(n.resources, need)]
    if not able:
        return None
    return min(able, key=lambda n: (per_node.get(n.node_id, 0), n.node_id)).node_id


def proxy_retry_delay(failures: int) -> float:
    """How long to wait before trying again a proxy that failed to start ``failures`` times in a row."""
    return min(PROXY_RETRY_S * 2 ** max(failures - 1, 0), PROXY_RETRY_MAX_S)


def same_host_proxies(node_id: str, nodes: Sequence[NodeInfo], with_proxy: Collection[str]) -> list[str]:
    """The other nodes on ``node_id``'s machine (same address) that run one of this Serve's proxies:
    the ones holding the port when ``node_id``'s proxy cannot bind it."""
    ips = {n.node_id: n.ip for n in nodes}
    mine = ips.get(node_id, "")
    if not mine:
        return []
    return sorted(other for other in with_proxy if other != node_id and ips.get(other) == mine)


def port_held_by_own_proxy_message(host: str, port: int, holders: Sequence[str]) -> str:
    """Why a proxy cannot bind when another proxy of the same Serve, on another node of the same machine,
    holds the port: another port would not help (every proxy uses the same one); sharing it does."""
    named = ", ".join(h[:12] for h in holders)
    return (f"Port {port} on {host} is held by this Serve's own HTTP proxy on node {named}, another Ray node on "
            "the same machine, and http_options reuse_port is off, so they cannot share it. Turn it on "
            "(http_options={'reuse_port': True}, the default where the platform has SO_REUSEPORT) or run one "
            "Ray node per machine.")
