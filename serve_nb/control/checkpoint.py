"""The controller's checkpoint: its desired state, saved in the cluster's key-value store on every change.

A restarted controller loads it and adopts the replicas still running. The saved form is a plain
dict (stable across serve_nb versions that share it); the dataclasses here are how code reads it.
Nothing secret is saved: replicas' channel secrets are learned again from the replicas themselves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from serve_nb.common.messages import DeploymentSpec
from serve_nb.common.serialization import dumps, loads
from serve_nb.config import HTTPOptions
from serve_nb.core.log_format import LoggingConfig

logger = logging.getLogger(__name__)

CHECKPOINT_KEY = b"serve_nb:checkpoint"


@dataclass(frozen=True)
class SavedDeployment:
    spec: DeploymentSpec
    target: int
    removing: bool


@dataclass(frozen=True)
class SavedApp:
    route_prefix: str | None
    ingress: str
    deployed_at: float
    deleting: bool
    was_running: bool
    deployments: dict[str, SavedDeployment]


@dataclass(frozen=True)
class Checkpoint:
    http_options: HTTPOptions
    apps: dict[str, SavedApp]
    logging_config: LoggingConfig = LoggingConfig()  # the proxies'


def encode(checkpoint: Checkpoint) -> bytes:
    apps = {
        name: {
            "route_prefix": app.route_prefix,
            "ingress": app.ingress,
            "deployed_at": app.deployed_at,
            "deleting": app.deleting,
            "was_running": app.was_running,
            "deployments": {d: (s.spec, s.target, s.removing) for d, s in app.deployments.items()},
        }
        for name, app in checkpoint.apps.items()
    }
    return dumps({"http_options": checkpoint.http_options, "apps": apps,
                  "logging_config": checkpoint.logging_config.to_dict()})


def decode(blob: bytes) -> Checkpoint:
    """The inverse of ``encode``; raises on a blob it cannot read. Keys it does not know (the cluster
    token earlier versions saved) are ignored, and missing top-level ones take their defaults."""
    saved: dict[str, Any] = loads(blob)
    apps = {
        name: SavedApp(
            app["route_prefix"], app["ingress"], app["deployed_at"], app["deleting"], app["was_running"],
            {d: SavedDeployment(spec, target, removing) for d, (spec, target, removing) in app["deployments"].items()},
        )
        for name, app in saved.get("apps", {}).items()
    }
    return Checkpoint(saved.get("http_options") or HTTPOptions(), apps, LoggingConfig.parse(saved.get("logging_config")))


class KeyValueStore(Protocol):
    def kv_get(self, key: bytes) -> bytes | None: ...

    def kv_put(self, key: bytes, value: bytes) -> None: ...

    def kv_delete(self, key: bytes) -> None: ...


class CheckpointStore:
    """The checkpoint under one key of a key-value store that outlives the controller."""

    def __init__(self, kv: KeyValueStore) -> None:
        self._kv = kv

    def load(self) -> Checkpoint | None:
        """The saved checkpoint; None if there is none or it cannot be read (then the controller starts empty)."""
        blob = self._kv.kv_get(CHECKPOINT_KEY)
        if not blob:
            return None
        try:
            return decode(blob)
        except Exception:
            logger.exception("serve_nb: unreadable checkpoint; starting empty")
            return None

    def save(self, checkpoint: Checkpoint) -> None:
        self._kv.kv_put(CHECKPOINT_KEY, encode(checkpoint))

    def delete(self) -> None:
        self._kv.kv_delete(CHECKPOINT_KEY)
