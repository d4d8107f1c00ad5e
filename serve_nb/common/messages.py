"""Plain records that cross actor boundaries between caller, controller and replicas."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from serve_nb.config import DeploymentConfig, HTTPOptions
from serve_nb.types import ReplicaInfo


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment as the caller built it: code and args already serialized, versions computed."""

    name: str
    def_blob: bytes
    args_blob: bytes
    config: DeploymentConfig
    version: str  # replicas with another version are replaced
    is_class: bool

    @property
    def config_version(self) -> str:
        """Changes here reconfigure replicas in place (user_config, max_ongoing_requests)."""
        from serve_nb.core.versions import json_version

        return json_version({"user_config": self.config.user_config, "max_ongoing": self.config.max_ongoing_requests})


@dataclass(frozen=True)
class ClusterInfo:
    """What every serve_nb process needs from the controller once."""

    token: bytes
    http_options: HTTPOptions
    epoch: str


@dataclass(frozen=True)
class ReplicaInit:
    app: str
    deployment: str
    replica_id: str
    def_blob: bytes
    args_blob: bytes
    is_class: bool
    version: str
    config_version: str
    max_ongoing_requests: int
    graceful_shutdown_wait_loop_s: float
    token: bytes
    controller: Any = None  # handle to the controller, so the replica's own handles need no lookup
    cluster_info: "ClusterInfo | None" = None


@dataclass(frozen=True)
class InitResult:
    ok: bool
    info: ReplicaInfo | None = None
    methods: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class ReplicaMetadata:
    """What a restarted controller learns from a replica it adopts."""

    replica_id: str
    version: str
    config_version: str
    info: ReplicaInfo | None
    methods: tuple[str, ...] = ()
    started_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
