"""The long-poll feed, host side: versioned snapshots the controller publishes, and waiting for change.

Routers subscribe to replica sets, proxies to the route table, widgets to status and app details
(see ``serve_nb.data.longpoll`` for the listener). A listener's call returns as soon as anything it
holds is stale, or after a timeout; so nobody asks the controller per request or per redraw.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Mapping

from serve_nb.core.snapshots import SnapshotStore, Update

LISTEN_TIMEOUT_S = 30.0


class LongPollHost:
    """Controller side: a SnapshotStore plus waiting for changes. Runs on the controller's loop."""

    def __init__(self, epoch: str) -> None:
        self.store = SnapshotStore(epoch)
        self._changed = asyncio.Event()

    def publish(self, key: str, value: Any) -> None:
        if self.store.set(key, value):
            self._notify()

    def remove(self, key: str) -> None:
        if self.store.delete(key):
            self._notify()

    def _notify(self) -> None:
        old, self._changed = self._changed, asyncio.Event()
        old.set()

    async def listen(self, known: Mapping[str, tuple[str, int] | None], timeout_s: float = LISTEN_TIMEOUT_S) -> dict[str, Update]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s * random.uniform(0.9, 1.1)
        while True:
            updates = self.store.updates_since(known)
            if updates:
                return updates
            remaining = deadline - loop.time()
            if remaining <= 0:
                return {}
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                return {}
