"""``serve.get_replica_context()``: which replica the current code runs in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serve_nb.exceptions import RayServeException


@dataclass(frozen=True)
class ReplicaContext:
    app_name: str
    deployment: str
    replica_id: str
    servable_object: Any = None

    @property
    def replica_tag(self) -> str:
        return self.replica_id


_context: ReplicaContext | None = None


def set_replica_context(ctx: ReplicaContext) -> None:
    global _context
    _context = ctx


def get_replica_context() -> ReplicaContext:
    """The running replica's context; raises outside a replica, as Ray Serve does."""
    if _context is None:
        raise RayServeException(
            "serve.get_replica_context() may only be called from within a serve_nb replica."
        )
    return _context


_max_ongoing_requests: int | None = None


def set_max_ongoing_requests(value: int) -> None:
    """The replica's current ``max_ongoing_requests`` (set at start and on every reconfigure)."""
    global _max_ongoing_requests
    _max_ongoing_requests = value


def current_max_ongoing_requests() -> int | None:
    """The running replica's ``max_ongoing_requests``; None outside a replica (``@serve.batch`` warns with it)."""
    return _max_ongoing_requests
