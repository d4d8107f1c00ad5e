"""What user code can ask about where it runs: ``serve.get_replica_context()``, the request's multiplexed
model id; and what the replica reports about itself (its loaded models, its batch sizes).

Module-level state, because a process runs at most one replica."""

from __future__ import annotations

import contextvars
import itertools
import os
import weakref
from dataclasses import dataclass
from typing import Any, Protocol

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

    @property
    def request_id(self) -> str:
        """The id of the request being handled ("" outside one): the client's ``X-Request-ID`` or a new one.
        It is in every log line the request causes, here and in the deployments it calls."""
        return _request.get()[0]


_context: ReplicaContext | None = None


def set_replica_context(ctx: ReplicaContext) -> None:
    global _context
    _context = ctx


def current_replica_context() -> ReplicaContext | None:
    """The running replica's context, or None outside a replica (never raises)."""
    return _context


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


# -- per request: the multiplexed model asked for -------------------------------------------------

_model_id: contextvars.ContextVar[str] = contextvars.ContextVar("serve_nb_multiplexed_model_id", default="")


def get_multiplexed_model_id() -> str:
    """The model id the current request asked for (``handle.options(multiplexed_model_id=...)`` or the
    ``serve_multiplexed_model_id`` HTTP header); "" outside a request or when none was given."""
    return _model_id.get()


def set_multiplexed_model_id(model_id: str) -> contextvars.Token[str]:
    """Set for the rest of the current context (a request's task, or a batch's run of the user's function)."""
    return _model_id.set(model_id)


# -- per request: its id and route, passed on to every deployment it calls -------------------------

_request: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar("serve_nb_request", default=("", ""))
_id_prefix = os.urandom(6).hex()
_id_counter = itertools.count()


def new_request_id() -> str:
    """A request id unique across processes (a random per-process prefix and a counter): cheap enough for
    every request, unlike a uuid4."""
    return f"{_id_prefix}{next(_id_counter):010x}"


def current_request() -> tuple[str, str]:
    """(request id, route) of the request this code runs for; ("", "") outside one."""
    return _request.get()


def set_request(request_id: str, route: str) -> contextvars.Token[tuple[str, str]]:
    """Set for the rest of the current context (the request's own task)."""
    return _request.set((request_id, route))


def request_for_call() -> tuple[str, str]:
    """(request id, route) for a handle call made now: the current request's, so a composed call keeps the
    id of the request that caused it; else a new id."""
    request_id, route = _request.get()
    return (request_id or new_request_id(), route)


# -- per replica: what it reports to the controller besides its load ------------------------------


class HoldsModels(Protocol):
    """A multiplexed loader's cache: the model ids it holds or is loading."""

    @property
    def model_ids(self) -> list[str]: ...


_model_caches: "weakref.WeakSet[Any]" = weakref.WeakSet()
_batch_sizes: list[int] = []
#: Batch sizes kept between two reports at most; a replica whose reports fail must not grow without bound.
MAX_PENDING_BATCH_SIZES = 1000


def register_model_cache(cache: HoldsModels) -> None:
    """A multiplexed loader's cache, so the replica can report its models (weakly held: it goes with its owner)."""
    _model_caches.add(cache)


def loaded_model_ids() -> tuple[str, ...]:
    """Every model this process holds or is loading, sorted: what routers should prefer this replica for."""
    return tuple(sorted({m for cache in list(_model_caches) for m in cache.model_ids}))


def record_batch_size(size: int) -> None:
    """One batch of ``@serve.batch`` ran with ``size`` items; reported with the replica's next metrics."""
    if len(_batch_sizes) < MAX_PENDING_BATCH_SIZES:
        _batch_sizes.append(size)


def drain_batch_sizes() -> list[int]:
    """The batch sizes recorded since the last call."""
    sizes = _batch_sizes[:]
    _batch_sizes.clear()
    return sizes
