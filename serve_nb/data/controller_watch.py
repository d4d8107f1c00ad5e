"""Whether the controller answers, for views that must say so within seconds instead of going quiet.

The long-poll cannot tell: its call normally stays unanswered for half a minute, and a controller whose
node hangs leaves it unanswered for ever. So while anyone watches (a notebook widget), one cheap call goes
to the controller every ``PROBE_INTERVAL_S``; no answer within ``PROBE_TIMEOUT_S``, or an error, makes it
unreachable until a later call is answered. Nobody watching: no calls. Pure asyncio with the call as a seam,
so it is tested with no Ray.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from serve_nb.data.loop import consume
from serve_nb.ray_private import ray_client_connected

logger = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[Any]]
Sleep = Callable[[float], Awaitable[None]]

#: A live controller answers in milliseconds; these bound how soon a view says it does not (≈ 5 s).
PROBE_INTERVAL_S = 2.0
PROBE_TIMEOUT_S = 3.0


class Watch:
    """One watcher's subscription; ``cancel()`` stops its callbacks (and the calls, once nobody watches)."""

    def __init__(self, owner: "ControllerWatch", callback: Callable[[bool], None]) -> None:
        self._owner = owner
        self.callback = callback

    def cancel(self) -> None:
        self._owner.unwatch(self)


class ControllerWatch:
    """Probes the controller while watched, on ``loop``; callbacks run there with ``True`` (answers) or
    ``False`` (unreachable): once at once if the state is known, then on every change."""

    def __init__(self, loop: asyncio.AbstractEventLoop, probe: Probe, *, sleep: Sleep = asyncio.sleep,
                 interval_s: float = PROBE_INTERVAL_S, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self._loop = loop
        self._probe = probe
        self._sleep = sleep
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._watches: list[Watch] = []
        self._reachable: bool | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def reachable(self) -> bool | None:
        """The last probe's outcome (None: no probe answered or failed yet)."""
        return self._reachable

    def watch(self, callback: Callable[[bool], None]) -> Watch:
        """Thread-safe: start hearing about the controller's reachability."""
        w = Watch(self, callback)
        self._loop.call_soon_threadsafe(self._add, w)
        return w

    def unwatch(self, w: Watch) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._remove, w)

    def close(self) -> None:
        """Stop probing for good (the process's client closes)."""

        def _close() -> None:
            self._closed = True
            self._watches.clear()
            if self._task is not None:
                self._task.cancel()

        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(_close)

    def _add(self, w: Watch) -> None:
        if self._closed:
            return
        self._watches.append(w)
        if self._reachable is not None:
            self._deliver(w, self._reachable)
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._run())

    def _remove(self, w: Watch) -> None:
        if w in self._watches:
            self._watches.remove(w)

    def _deliver(self, w: Watch, reachable: bool) -> None:
        try:
            w.callback(reachable)
        except Exception:  # one broken view must not stop the others hearing
            logger.exception("serve_nb controller watch callback failed")

    async def _run(self) -> None:
        while self._watches and not self._closed:
            reachable = await self._answers()
            if reachable != self._reachable:
                self._reachable = reachable
                for w in list(self._watches):
                    self._deliver(w, reachable)
            await self._sleep(self._interval_s)

    async def _answers(self) -> bool:
        try:
            probe = asyncio.ensure_future(self._probe())
        except Exception as exc:  # no controller handle (Serve shut down), Ray gone
            return self._failed(exc)
        probe.add_done_callback(consume)  # an abandoned probe must not log "exception never retrieved"
        done, _ = await asyncio.wait({probe}, timeout=self._timeout_s)
        if not done:
            if not ray_client_connected():  # Ray Client errors on a cancelled await: there it is left to finish
                probe.cancel()
            return self._failed(asyncio.TimeoutError(f"no answer within {self._timeout_s} s"))
        if probe.exception() is not None:  # controller dead or restarting
            return self._failed(probe.exception())
        return True

    def _failed(self, exc: BaseException | None) -> bool:
        if self._reachable is not False:
            logger.debug("serve_nb: the controller did not answer (%s)", type(exc).__name__)
        return False
