"""The controller's long-poll feed, for your own code (the notebook widgets use it too).

``subscribe(key, callback)`` calls ``callback(value)`` on a background thread whenever the value
of ``key`` changes, and once at once with the current value. One outstanding request per process
carries every subscription, however many there are.

Keys: ``STATUS`` (a ``ServeStatus``), ``ROUTES`` ({prefix: (app, ingress)}),
``replicas(app, deployment)`` (a ``ReplicaSet``, with the multiplexed models each replica holds),
``app(name)`` (an ``AppDetail``: what the app widget shows).

``watch_controller(callback)`` says whether the controller answers at all (``True``/``False``, within about
5 s of a change), which the long-poll alone cannot: a view keeps its last state and says
"controller unreachable, retrying" meanwhile.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Callable

from serve_nb.core.snapshots import ROUTES_KEY, STATUS_KEY, app_key, replicas_key
from serve_nb.exceptions import RayServeException

STATUS = STATUS_KEY
ROUTES = ROUTES_KEY
replicas = replicas_key
app = app_key


def subscribe(key: str, callback: Callable[[Any], None]) -> Any:
    """Subscribe to ``key``; returns a subscription with ``.cancel()``. Needs Serve to be running."""
    return _client().longpoll.subscribe(key, callback)


def watch_controller(callback: Callable[[bool], None]) -> Any:
    """Call ``callback(reachable)`` on a background thread whenever the controller starts or stops answering
    (at once if known); returns a subscription with ``.cancel()``. While anyone watches, this process asks the
    controller a cheap question every 2 s. Needs Serve to be running."""
    return _client().controller_watch.watch(callback)


def _client() -> Any:
    from serve_nb.data.client import get_client

    client = get_client()
    if client is None:
        raise RayServeException("serve_nb is not running; call serve.start() or serve.run() first.")
    return client


def get(key: str, timeout_s: float | None = 10.0) -> Any:
    """The current value of ``key`` as the feed delivers it (waits for the first delivery)."""
    first: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def on_value(value: Any) -> None:
        if not first.done():
            first.set_result(value)

    sub = subscribe(key, on_value)
    try:
        return first.result(timeout_s)
    finally:
        sub.cancel()
