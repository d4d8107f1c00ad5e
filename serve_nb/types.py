"""Identifiers, status enums and the status objects returned by ``serve.status()``.

Plain data only: these travel between the controller, the caller and the widgets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from serve_nb.config import DEFAULT_MAX_ONGOING_REQUESTS


class _StrEnum(str, Enum):
    """A str enum whose members compare equal to, and print as, their value."""

    def __str__(self) -> str:
        return self.value


class ApplicationStatus(_StrEnum):
    NOT_STARTED = "NOT_STARTED"
    DEPLOYING = "DEPLOYING"
    RUNNING = "RUNNING"
    DEPLOY_FAILED = "DEPLOY_FAILED"
    UNHEALTHY = "UNHEALTHY"
    DELETING = "DELETING"


class DeploymentStatus(_StrEnum):
    UPDATING = "UPDATING"
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"
    DEPLOY_FAILED = "DEPLOY_FAILED"
    UPSCALING = "UPSCALING"
    DOWNSCALING = "DOWNSCALING"


class ReplicaState(_StrEnum):
    STARTING = "STARTING"
    UPDATING = "UPDATING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"


class ProxyStatus(_StrEnum):
    """An HTTP proxy's state; values equal the strings ``serve.status()`` always reported."""

    STARTING = "STARTING"
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"


class DeploymentID(NamedTuple):
    """A deployment is named uniquely within its application."""

    app: str
    name: str

    def __str__(self) -> str:
        return f"{self.app}#{self.name}"


@dataclass(frozen=True)
class RequestSummary:
    """What one deployment's replicas served over the last ``window_s`` seconds (see
    ``serve_nb.core.request_stats``): live figures for ``serve.status()`` and the widgets.

    ``p50_ms``/``p99_ms`` are estimated from fixed latency buckets (Ray Serve's), by interpolating inside
    the bucket that holds the ranked request: they are off by at most that bucket's width."""

    count: int  # requests finished in the window
    requests_per_s: float  # ``count / window_s``
    p50_ms: float
    p99_ms: float
    errors: int  # requests that raised, or answered HTTP 5xx
    error_rate: float  # ``errors / count``
    window_s: float  # seconds covered: the full window, or less while the deployment is younger than that


@dataclass(frozen=True)
class DeploymentStatusInfo:
    name: str
    status: DeploymentStatus
    message: str = ""
    replica_states: dict[str, int] = field(default_factory=dict)
    target_replicas: int = 0
    # True when ``message`` says replicas are waiting for cluster resources (so callers need not parse it).
    waiting_for_resources: bool = False
    # Replicas whose __init__ has run for a while (id -> seconds, coarse), also named in ``message``.
    initializing_for_s: dict[str, float] = field(default_factory=dict)
    # Requests served over the last minute; None when it served none in that window.
    requests: RequestSummary | None = None


@dataclass(frozen=True)
class ApplicationStatusInfo:
    name: str
    status: ApplicationStatus
    message: str = ""
    route_prefix: str | None = None
    ingress: str = ""
    deployments: dict[str, DeploymentStatusInfo] = field(default_factory=dict)
    last_deployed_time_s: float = 0.0


@dataclass(frozen=True)
class ProxyStatusInfo:
    node_id: str
    address: str
    status: ProxyStatus
    message: str = ""


@dataclass(frozen=True)
class ServeStatus:
    """What ``serve.status()`` returns: every application, and the HTTP proxies by node id.

    ``proxies`` maps each node to its proxy's status, as Ray Serve's does (code compares the values with
    ``"HEALTHY"``); ``proxy_details`` adds where each listens and why one is not healthy."""

    applications: dict[str, ApplicationStatusInfo] = field(default_factory=dict)
    proxies: dict[str, ProxyStatus] = field(default_factory=dict)
    proxy_details: dict[str, ProxyStatusInfo] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplicaInfo:
    """How to reach one running replica; published to routers on the long-poll.

    ``secret`` is the replica's own channel secret (made by the replica; it reaches callers only over
    Ray, never a checkpoint or a log: it is left out of ``repr``). ``key_uses_ray_token`` says the
    channel key also mixes in Ray's auth token (see ``serve_nb.data.channel.auth.channel_key``)."""

    replica_id: str
    host: str
    port: int
    uds_path: str | None
    node_id: str
    pid: int
    secret: bytes = field(default=b"", repr=False)
    key_uses_ray_token: bool = False


@dataclass(frozen=True)
class ReplicaSet:
    """A deployment's routable replicas. ``unavailable`` says why requests cannot be served at all."""

    replicas: tuple[ReplicaInfo, ...] = ()
    max_ongoing_requests: int = DEFAULT_MAX_ONGOING_REQUESTS
    max_queued_requests: int = -1
    unavailable: str | None = None
    methods: tuple[str, ...] = ()
    # With no replica serving yet: what the first one is waiting for ("" if nothing worth saying). The
    # proxy puts it in the 503 it answers once a request has waited long enough.
    waiting: str = ""
    # Multiplexed models each replica holds or is loading (replica id -> model ids), as last reported.
    models: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplicaDetail:
    replica_id: str
    state: str
    node_id: str
    pid: int
    started_at: float
    ongoing: int
    version: str
    models: tuple[str, ...] = ()  # multiplexed models it holds or is loading
    node_ip: str = ""  # the address its node is reached at ("" until the replica reports it)


@dataclass(frozen=True)
class ScalingEvent:
    """One autoscaling (or manual scaling) decision: when, from how many to how many, and why."""

    time: float
    from_replicas: int
    to_replicas: int
    reason: str


@dataclass(frozen=True)
class DeploymentDetail:
    name: str
    status: str
    message: str
    target: int
    running: int
    replicas: tuple[ReplicaDetail, ...] = ()
    autoscaling: dict | None = None
    last_decision: str = ""
    events: tuple[ScalingEvent, ...] = ()
    ongoing: float = 0.0
    batch_sizes: tuple[int, ...] = ()  # sizes of its recent @serve.batch batches, oldest first
    requests: RequestSummary | None = None  # as in its DeploymentStatusInfo
    version: str = ""  # the version it is deploying or runs: its replicas of this version count as the new ones


@dataclass(frozen=True)
class AppDetail:
    """Everything the notebook's application widget shows, published on the ``app:<name>`` key."""

    name: str
    status: str
    message: str
    route_prefix: str | None
    ingress: str
    http_address: str | None
    deployments: tuple[DeploymentDetail, ...] = ()
    history: tuple[tuple[float, int, float], ...] = ()  # (time, running replicas, ongoing requests)
    logs: tuple[str, ...] = ()
    deployed_at: float = 0.0  # the app's last_deployed_time_s: tells a deploy's own details from older ones
