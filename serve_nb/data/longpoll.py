"""The long-poll feed, listener side: every process keeps one outstanding call to the controller.

Routers subscribe to replica sets, proxies to the route table, widgets to status and app details.
A listener's call returns as soon as anything it holds is stale, or after a timeout; so nobody
asks the controller per request or per redraw.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Awaitable, Callable, Mapping

from serve_nb.core.snapshots import Update
from serve_nb.data.loop import abandonable
from serve_nb.ray_private import ray_client_connected

logger = logging.getLogger(__name__)

Callback = Callable[[Any], None]
Sleep = Callable[[float], Awaitable[None]]
Abandon = Callable[["asyncio.Future[Any]", Any], None]

#: After the n-th failed call in a row wait RETRY_BASE_S * 2**n, at most RETRY_MAX_S: a restarting
#: controller is back within seconds, and a stopped one must not be hammered.
RETRY_BASE_S = 0.05
RETRY_MAX_S = 2.0


class Subscription:
    def __init__(self, client: "LongPollClient", key: str, callback: Callback) -> None:
        self.client = client
        self.key = key
        self.callback = callback

    def cancel(self) -> None:
        self.client.unsubscribe(self)


class LongPollClient:
    """One per process, on the background loop: batches every subscribed key into one outstanding call.

    Callbacks run on the background loop whenever a key's value changes (``None`` once deleted).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        get_controller: Callable[[], Any],
        *,
        sleep: Sleep = asyncio.sleep,
        abandon: "Abandon | None" = None,
    ) -> None:
        self._loop = loop
        self._get_controller = get_controller
        # Seams, so the listener is tested with a fake controller and no Ray: how to wait between
        # retries, and how to give up an outstanding call when the subscribed keys change.
        self._sleep = sleep
        self._abandon = abandon or abandon_ray_call
        self._subs: dict[str, list[Subscription]] = {}
        self._known: dict[str, tuple[str, int]] = {}
        self._values: dict[str, Any] = {}
        self._keys_changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._lock = threading.Lock()

    def subscribe(self, key: str, callback: Callback) -> Subscription:
        """Thread-safe. The callback gets the current value at once if one is known."""
        sub = Subscription(self, key, callback)
        self._loop.call_soon_threadsafe(self._add, sub)
        return sub

    def _add(self, sub: Subscription) -> None:
        if self._closed:
            return
        new_key = sub.key not in self._subs
        self._subs.setdefault(sub.key, []).append(sub)
        if sub.key in self._values:
            self._deliver(sub, self._values[sub.key])
        if new_key:
            self._keys_changed.set()
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._run())

    def unsubscribe(self, sub: Subscription) -> None:
        self._loop.call_soon_threadsafe(self._remove, sub)

    def _remove(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.key)
        if subs and sub in subs:
            subs.remove(sub)
            if not subs:
                del self._subs[sub.key]
                self._known.pop(sub.key, None)
                self._values.pop(sub.key, None)

    def _deliver(self, sub: Subscription, value: Any) -> None:
        try:
            sub.callback(value)
        except Exception:  # a broken subscriber must not stop the feed for the others
            logger.exception("serve_nb long-poll callback for %r failed", sub.key)

    def _apply(self, updates: Mapping[str, Update]) -> None:
        for key, update in updates.items():
            if key not in self._subs:
                continue
            self._known[key] = (update.epoch, update.version)
            self._values[key] = update.value
            for sub in list(self._subs.get(key, ())):
                self._deliver(sub, update.value)

    async def _run(self) -> None:
        failures = 0
        while self._subs and not self._closed:
            self._keys_changed.clear()
            known = {k: self._known.get(k) for k in self._subs}
            try:
                ref = self._get_controller().listen_for_change.options(max_task_retries=0).remote(known)
            except Exception as exc:  # controller gone (serve shut down) or not yet back
                failures += 1
                self._lost(exc, failures)
                await self._sleep(min(RETRY_BASE_S * 2**failures, RETRY_MAX_S))
                continue
            poll = abandonable(ref)
            changed = asyncio.ensure_future(self._keys_changed.wait())
            done, _ = await asyncio.wait({poll, changed}, return_when=asyncio.FIRST_COMPLETED)
            if poll not in done:
                changed.cancel()
                self._abandon(poll, ref)
                continue
            changed.cancel()
            try:
                updates = poll.result()
            except Exception as exc:
                failures += 1
                self._lost(exc, failures)
                await self._sleep(min(RETRY_BASE_S * 2**failures, RETRY_MAX_S))
                continue
            failures = 0
            self._apply(updates)

    def _lost(self, exc: BaseException, failures: int) -> None:
        if failures == 1:
            logger.debug("serve_nb long-poll: controller unreachable (%s); retrying", exc)

    def close(self) -> None:
        """Stop polling; every subscriber hears ``None`` once (as if its key were deleted)."""

        def _close() -> None:
            self._closed = True
            for subs in list(self._subs.values()):
                for sub in subs:
                    self._deliver(sub, None)
            self._subs.clear()
            self._keys_changed.set()
            if self._task is not None:
                self._task.cancel()

        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(_close)


def abandon_ray_call(poll: "asyncio.Future[Any]", ref: Any) -> None:
    """Stop waiting for an outstanding call and cancel its Ray task. Ray Client errors on cancelled
    awaits, so there the call is left to finish unheeded."""
    if not ray_client_connected():
        poll.cancel()
        _cancel_ref(ref)


def _cancel_ref(ref: Any) -> None:
    try:
        import ray

        ray.cancel(ref)
    except Exception:
        pass
