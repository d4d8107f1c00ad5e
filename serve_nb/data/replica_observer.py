"""Every request a replica runs, timed and recorded once: Ray Serve's replica metrics, its access line, and
the tally the controller shows live in ``serve.status()`` and the widgets.

The replica wraps each request's awaitable or iterator here; the wrapper costs a clock read at each end
and a few dict updates, and the request's id and route are set for everything it logs or calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Callable

from serve_nb.core import metrics as m
from serve_nb.core.log_format import (
    CallOutcome, Component, LineFields, LoggingConfig, call_access_message, http_access_message,
)
from serve_nb.core.request_stats import RequestTally
from serve_nb.data import metrics
from serve_nb.data.http.asgi import RESPONSE_START
from serve_nb.data.request import Request, RequestKind
from serve_nb.data.serve_log import ServeLog, ServeLogHandler, log_path


class RequestObserver:
    """One per replica, used from its event loop only. ``store`` None: metrics are off (the observer keeps its
    totals anyway, for the live figures); ``log`` None: no access lines (a unit test's replica)."""

    def __init__(self, app: str, deployment: str, replica_id: str, store: m.SeriesStore | None,
                 log: ServeLog | None) -> None:
        self._tags = (deployment, replica_id, app)
        self.store = store if store is not None else m.SeriesStore()
        self.log = log
        self.handler: logging.Handler | None = None  # the user's log records into ``log``
        self.tally = RequestTally()  # the live figures', drained by the replica's report loop (same loop)
        self._keys: dict[str, tuple[m.Key, m.Key]] = {}  # route -> (request counter, latency) keys

    def started(self) -> None:
        """The replica is up: one more start of Ray Serve's ``serve_deployment_replica_starts``."""
        self.store.inc((m.REPLICA_STARTS, self._tags))

    def ongoing(self, count: int) -> None:
        self.store.gauges[(m.REPLICA_PROCESSING, self._tags)] = count

    def close(self) -> None:
        """The replica stops: what it recorded goes out now."""
        metrics.flush()
        if self.log is not None:
            self.log.close()

    def call_done(self, request: Request, start: float, outcome: CallOutcome, error: BaseException | None) -> None:
        """A handle call ended (the replica's own call path reports here, without wrapping a coroutine)."""
        self._done(request, start, error, None, outcome)

    async def stream(self, request: Request, items: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """A streamed call's items, or an HTTP request's batches of ASGI messages (whose status it reads)."""
        start = time.perf_counter()
        status: int | None = None
        outcome, error = CallOutcome.ERROR, None
        http = request.kind is RequestKind.HTTP or request.kind is RequestKind.WEBSOCKET
        try:
            async for item in items:
                if http and status is None:
                    status = _answer_status(item)
                yield item
            outcome = CallOutcome.OK
        except (asyncio.CancelledError, GeneratorExit):
            outcome = CallOutcome.CANCELLED
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            close = getattr(items, "aclose", None)
            if close is not None:
                await close()  # the user's cleanup runs now, when a request is cancelled
            if http:
                self.http_done(request, start, status, outcome, error)
            else:
                self._done(request, start, error, None, outcome)

    def http_done(self, request: Request, start: float, status: int | None, outcome: CallOutcome,
                  error: BaseException | None) -> None:
        """An HTTP request or WebSocket ended, having answered ``status`` (None: nothing). The HTTP adapter
        reports here itself (``ReplicaCore.handle``): a wrapping generator cost every request a layer."""
        scope = request.args[0]
        shown = status if status is not None else (499 if outcome is CallOutcome.CANCELLED else 500)
        verb = scope.get("method") or ("WEBSOCKET" if scope.get("type") == "websocket" else "?")
        message = http_access_message(verb, request.route or scope.get("path", ""), shown, _ms(start))
        self._done(request, start, error, message, failed=status is not None and status >= 500)

    def user_error(self, request_route: str, exc: BaseException) -> None:
        """The user's code raised under an HTTP request (the adapter answered 500): an error of this replica."""
        self.store.inc((m.REPLICA_ERRORS, (*self._tags, request_route, type(exc).__name__)))

    def _done(self, request: Request, start: float, error: BaseException | None, message: str | None,
              outcome: CallOutcome = CallOutcome.OK, failed: bool = False) -> None:
        """``message`` None: a handle call's, made from ``outcome`` and the latency measured here."""
        latency_ms = (time.perf_counter() - start) * 1000
        if message is None:
            message = call_access_message(request.method, outcome, latency_ms)
        keys = self._keys.get(request.route)
        if keys is None:
            tags = (*self._tags, request.route)
            keys = self._keys[request.route] = ((m.REPLICA_REQUESTS, tags), (m.REPLICA_LATENCY, tags))
        store = self.store
        store.inc(keys[0])
        store.observe(keys[1], latency_ms)
        if error is not None:
            store.inc((m.REPLICA_ERRORS, (*keys[0][1], type(error).__name__)))
        self.tally.add(latency_ms, error is not None or failed)
        if self.log is not None:
            self.log.access(request.request_id, request.route, message, "INFO" if error is None and not failed else "ERROR")


#: The HTTP status an ASGI message answers with: a WebSocket's accept is 101, a close before it 403.
_WEBSOCKET_ANSWERS = {"websocket.accept": 101, "websocket.close": 403}


def _answer_status(batch: list[Any]) -> int | None:
    """The status a batch of an HTTP or WebSocket request's messages starts the answer with, if it does."""
    for message in batch:
        kind = message["type"]
        if kind == RESPONSE_START or kind == "websocket.http.response.start":
            return message["status"]
        if kind in _WEBSOCKET_ANSWERS:
            return _WEBSOCKET_ANSWERS[kind]
    return None


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def replica_log_file(app: str, deployment: str, replica_id: str) -> str:
    return f"replica_{app}_{deployment}_{replica_id}.log"


def observe_replica(app: str, deployment: str, replica_id: str, config: LoggingConfig | None,
                    feed: Callable[[str], None], session_dir: str | None) -> RequestObserver:
    """A running replica's observer: Ray Serve's metrics (unless ``SERVE_NB_METRICS=0``) and its Serve log,
    which the user's log records join (with their request ids) and which feeds the widget's log."""
    config = config or LoggingConfig()
    who = LineFields(Component.REPLICA, replica_id, app, deployment, replica_id)
    log = ServeLog(who, config, log_path(config.logs_dir, session_dir, replica_log_file(app, deployment, replica_id)),
                   feed)
    observer = RequestObserver(app, deployment, replica_id, metrics.store(), log)
    observer.handler = ServeLogHandler(log)
    apply_log_level(observer.handler, config)
    return observer


def apply_log_level(handler: logging.Handler, config: LoggingConfig) -> None:
    """``log_level`` decides which of the user's records reach the replica's log (their loggers inherit it)."""
    level = logging.getLevelName(config.log_level)
    handler.setLevel(level)
    logging.getLogger().setLevel(level)


def reconfigure_logging(observer: RequestObserver, config: LoggingConfig | None, session_dir: str | None) -> None:
    if observer.log is None:
        return
    config = config or LoggingConfig()
    who = observer.log.who
    observer.log.configure(config, log_path(config.logs_dir, session_dir,
                                            replica_log_file(who.application, who.deployment, who.replica)))
    if observer.handler is not None:
        apply_log_level(observer.handler, config)
