"""One background event loop per process for serve_nb's client side (routers, channels, long-poll).

A notebook cell always runs with the kernel's loop running, so nothing here may need the
caller's loop: callers on any thread hand coroutines to this loop and wait on thread-safe futures.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import threading
from typing import Any, Coroutine, TypeVar

T = TypeVar("T")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except Exception:  # pragma: no cover - uvloop is optional
        return asyncio.new_event_loop()


class BackgroundLoop:
    """A daemon thread running an event loop; ``submit`` works from any thread."""

    def __init__(self, name: str = "serve_nb-client") -> None:
        self.loop = _new_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def in_loop_thread(self) -> bool:
        return threading.get_ident() == self._thread.ident

    def submit(self, coro: Coroutine[Any, Any, T]) -> "concurrent.futures.Future[T]":
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and block for its result (not from the loop's own thread)."""
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("BackgroundLoop.run() called from the loop's own thread would deadlock.")
        return self.submit(coro).result(timeout)

    def call_soon(self, fn: Any, *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        if not self.in_loop_thread():
            self._thread.join(timeout=2)


_lock = threading.Lock()
_instance: BackgroundLoop | None = None


def get_loop() -> BackgroundLoop:
    """The process's background loop, started on first use."""
    global _instance
    if _instance is None or not _instance.thread.is_alive():
        with _lock:
            if _instance is None or not _instance.thread.is_alive():
                _instance = BackgroundLoop()
    return _instance


@atexit.register
def _stop_at_exit() -> None:
    if _instance is not None:
        _instance.stop()


def consume(fut: "asyncio.Future[Any]") -> None:
    """A done-callback for a future its waiter may abandon: its exception is retrieved, so asyncio does not log
    "exception was never retrieved" for a call nobody waits for any more."""
    if not fut.cancelled():
        fut.exception()


def abandonable(ref: Any) -> "asyncio.Future[Any]":
    """A future for the Ray call ``ref`` (an ObjectRef, awaitable on this loop) that may be abandoned quietly."""
    fut = asyncio.ensure_future(_await(ref))
    fut.add_done_callback(consume)
    return fut


async def _await(ref: Any) -> Any:
    return await ref
