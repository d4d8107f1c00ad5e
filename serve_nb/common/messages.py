"""Plain records that cross actor boundaries between caller, controller and replicas."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serve_nb.config import (
    DEFAULT_GRACEFUL_SHUTDOWN_WAIT_LOOP_S,
    DEFAULT_MAX_ONGOING_REQUESTS,
    DeploymentConfig,
    HTTPOptions,
    OptionEffect,
    option_values,
)
from serve_nb.core import versions
from serve_nb.core.log_format import LoggingConfig
from serve_nb.types import ReplicaInfo


@dataclass(frozen=True)
class ReplicaConfig:
    """The settings a replica applies: sent whole when it is created, and again, whole, on every
    reconfigure, so a replica never holds half of an old config and half of a new one.

    One field per deployment option whose effect reaches replicas (``OptionEffect.reaches_replicas``)
    plus the config version they add up to, which the replica reports back once applied.
    """

    user_config: Any = None
    logging_config: LoggingConfig | None = None
    max_ongoing_requests: int = DEFAULT_MAX_ONGOING_REQUESTS
    graceful_shutdown_wait_loop_s: float = DEFAULT_GRACEFUL_SHUTDOWN_WAIT_LOOP_S
    config_version: str = ""

    @classmethod
    def of(cls, config: DeploymentConfig) -> "ReplicaConfig":
        """The replica-facing part of ``config``, picked by the option table."""
        values = option_values(config, OptionEffect.RECONFIGURE, OptionEffect.DEFERRED)
        return cls(**values, config_version=versions.config_version(config))


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
        """Changes here reconfigure replicas in place (the RECONFIGURE options)."""
        return versions.config_version(self.config)

    @property
    def replica_config(self) -> ReplicaConfig:
        """What each replica of this spec is created with, and reconfigured to."""
        return ReplicaConfig.of(self.config)


@dataclass(frozen=True)
class ClusterInfo:
    """What every serve_nb process needs from the controller once. Nothing secret: each replica's
    channel secret travels with its ReplicaInfo instead."""

    http_options: HTTPOptions
    epoch: str


@dataclass(frozen=True)
class ReplicaInit:
    """What a replica actor is constructed with: its identity, its code and its ReplicaConfig.

    No secret: Ray keeps an actor's creation arguments in its GCS, so the replica makes its channel
    secret itself and returns it in its InitResult."""

    app: str
    deployment: str
    replica_id: str
    def_blob: bytes
    args_blob: bytes
    is_class: bool
    version: str
    config: ReplicaConfig
    controller: Any = None  # handle to the controller, so the replica's own handles need no lookup
    cluster_info: ClusterInfo | None = None

    @classmethod
    def for_replica(
        cls,
        spec: DeploymentSpec,
        *,
        app: str,
        replica_id: str,
        controller: Any = None,
        cluster_info: ClusterInfo | None = None,
    ) -> "ReplicaInit":
        """The construction record of replica ``replica_id`` of ``spec`` in application ``app``."""
        return cls(
            app=app,
            deployment=spec.name,
            replica_id=replica_id,
            def_blob=spec.def_blob,
            args_blob=spec.args_blob,
            is_class=spec.is_class,
            version=spec.version,
            config=spec.replica_config,
            controller=controller,
            cluster_info=cluster_info,
        )


@dataclass(frozen=True)
class InitResult:
    """A replica's answer to ``initialize``: how to reach it (with its channel secret), or the user's error."""

    ok: bool
    info: ReplicaInfo | None = None
    methods: tuple[str, ...] = ()
    error: str = ""
    # On failure, what the replica logged or printed while starting: often what the traceback does not say.
    log_lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReplicaMetadata:
    """What a restarted controller learns from a replica it adopts, its channel secret included (in
    ``info``), so routing goes on across a controller restart with nothing secret in the checkpoint."""

    replica_id: str
    version: str
    config_version: str
    info: ReplicaInfo | None
    methods: tuple[str, ...] = ()
    started_at: float = 0.0
