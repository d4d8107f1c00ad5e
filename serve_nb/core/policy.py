"""Controller decisions that need neither Ray nor an event loop: the replica target after a redeploy,
the autoscaling load window, when to add a point to an app's history chart, where proxies go.
"""

from __future__ import annotations

import collections
import ipaddress
import statistics
from typing import Sequence

from serve_nb.config import DeploymentConfig, ProxyLocation
from serve_nb.core.resources import NodeInfo

# With nothing changing, a history point this often anyway, so the chart's time axis keeps moving.
HISTORY_EVERY_S = 5.0

HistoryPoint = tuple[float, int, float]  # (time, running replicas, ongoing requests)


def redeploy_target(old: DeploymentConfig, new: DeploymentConfig, current: int) -> int:
    """The replica target when a deployment is redeployed with ``new`` config.

    A fixed size is taken as given; switching to autoscaling starts from its initial count; an
    autoscaling deployment keeps its current size, clamped into the new bounds (a redeploy must
    not undo what the autoscaler learnt)."""
    auto = new.autoscaling_config
    if auto is None:
        return new.num_replicas or 1
    if old.autoscaling_config is None:
        return auto.start_replicas
    return min(max(current, auto.min_replicas), auto.max_replicas)


class LoadWindow:
    """The load samples of the autoscaling look-back window; the policy sees their average."""

    def __init__(self) -> None:
        self._samples: collections.deque[tuple[float, float]] = collections.deque()

    def add(self, now: float, load: float, look_back_s: float) -> float:
        """Record ``load`` at ``now``, forget samples older than ``look_back_s``; the window's average."""
        self._samples.append((now, load))
        while self._samples and now - self._samples[0][0] > look_back_s:
            self._samples.popleft()
        return statistics.fmean(v for _, v in self._samples)


def history_point_due(last: HistoryPoint | None, running: int, ongoing: float, now: float) -> bool:
    """A new point when the numbers changed, else one every HISTORY_EVERY_S."""
    return last is None or (last[1], last[2]) != (running, ongoing) or now - last[0] >= HISTORY_EVERY_S


def proxy_nodes(location: ProxyLocation, nodes: Sequence[NodeInfo]) -> list[str]:
    """The nodes that should run an HTTP proxy for ``HTTPOptions.location``."""
    if location == ProxyLocation.NoServer:
        return []
    if location == ProxyLocation.HeadOnly:
        nodes = [n for n in nodes if n.is_head]
    return [n.node_id for n in nodes]


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def spans_machines(nodes: Sequence[NodeInfo]) -> bool:
    """True once the cluster's nodes are on more than one address: replicas must then listen on their
    node's IP, not on loopback (several nodes started on one host share one address)."""
    return len({n.ip for n in nodes if n.ip}) > 1
