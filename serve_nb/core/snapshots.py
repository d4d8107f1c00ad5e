"""Versioned snapshots for the long-poll: a listener sends the versions it has and gets what is newer.

The epoch changes whenever the controller restarts, so a listener holding versions from an
earlier incarnation is answered at once rather than waiting for numbers to catch up.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping


@dataclass(frozen=True)
class Update:
    epoch: str
    version: int
    value: Any  # None once the key was deleted


class SnapshotStore:
    """Key -> (version, value); a set with an equal value is not a change, so listeners are not woken."""

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        self._values: dict[str, Any] = {}
        self._versions: dict[str, int] = {}
        self._counter = 0

    def set(self, key: str, value: Any) -> bool:
        """Store ``value``; return True if it differs from what listeners have."""
        if key in self._values and self._values[key] == value:
            return False
        self._counter += 1
        self._values[key] = value
        self._versions[key] = self._counter
        return True

    def delete(self, key: str) -> bool:
        if key not in self._values or self._values[key] is None:
            return False
        return self.set(key, None)

    def get(self, key: str) -> Any:
        return self._values.get(key)

    def keys(self) -> list[str]:
        return [k for k, v in self._values.items() if v is not None]

    def updates_since(self, known: Mapping[str, tuple[str, int] | None]) -> dict[str, Update]:
        """What is newer than ``known`` ({key: (epoch, version) or None if never seen})."""
        out: dict[str, Update] = {}
        for key, seen in known.items():
            if key not in self._versions:
                continue
            version = self._versions[key]
            if seen is None or seen[0] != self.epoch or seen[1] < version:
                out[key] = Update(self.epoch, version, self._values[key])
        return out


class FeedKeyKind(Enum):
    """What a feed key holds. The keys stay plain strings on the wire; this is how code tells them apart."""

    ROUTES = "routes"  # {prefix: (app, ingress)}
    STATUS = "status"  # ServeStatus
    REPLICAS = "replicas"  # ReplicaSet of one deployment
    APP = "app"  # AppDetail of one application
    LOGGING = "logging"  # the proxies' LoggingConfig (serve.start's, or a config file's top-level one)


@dataclass(frozen=True)
class FeedKey:
    """A parsed feed key: its kind and, for per-app or per-deployment keys, what it names."""

    kind: FeedKeyKind
    app: str = ""
    deployment: str = ""


ROUTES_KEY = "routes"
STATUS_KEY = "status"
LOGGING_KEY = "logging"
_REPLICAS_PREFIX = "replicas:"
_APP_PREFIX = "app:"


def replicas_key(app: str, deployment: str) -> str:
    return f"{_REPLICAS_PREFIX}{app}#{deployment}"


def app_key(app: str) -> str:
    return f"{_APP_PREFIX}{app}"


def parse_key(key: str) -> FeedKey | None:
    """The inverse of the key builders above; None for a key no builder makes."""
    if key == ROUTES_KEY:
        return FeedKey(FeedKeyKind.ROUTES)
    if key == STATUS_KEY:
        return FeedKey(FeedKeyKind.STATUS)
    if key == LOGGING_KEY:
        return FeedKey(FeedKeyKind.LOGGING)
    if key.startswith(_APP_PREFIX):
        return FeedKey(FeedKeyKind.APP, key[len(_APP_PREFIX):])
    if key.startswith(_REPLICAS_PREFIX):
        app, sep, deployment = key[len(_REPLICAS_PREFIX):].partition("#")
        return FeedKey(FeedKeyKind.REPLICAS, app, deployment) if sep else None
    return None
