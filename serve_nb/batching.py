"""``@serve.batch``: callers pass one item each; the decorated function gets them as lists and answers
them all at once, which is what makes a vectorised model fast.

Ray Serve's semantics. A batch starts with its first item and closes when it holds ``max_batch_size``
items (as ``batch_size_fn`` counts them, if given) or ``batch_wait_timeout_s`` after that first item;
items left over start the next batch at once. Positional and keyword arguments are batched position
by position (``f(self, [a1, a2], k=[k1, k2])``), and the returned list is matched to callers by
position. Up to ``max_concurrent_batches`` batches run at a time. A caller that gives up before its
batch runs is left out of it. An async generator streams: each yielded list carries one item per
caller, and ``StopIteration`` in a caller's slot ends that caller's stream. With model multiplexing, a
batch holds the items of one model id only, and ``serve.get_multiplexed_model_id()`` in the function
returns it.

Plain asyncio: it works in a replica (one queue per instance, on the replica's loop) and in any
program with an event loop. ``set_max_batch_size`` / ``set_batch_wait_timeout_s`` on the decorated
callable apply from the next batch, so ``reconfigure()`` can tune batching from ``user_config``.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from serve_nb.data.context import (
    current_max_ongoing_requests, get_multiplexed_model_id, record_batch_size, set_multiplexed_model_id,
)
from serve_nb.data import metrics
from serve_nb.exceptions import RayServeException

logger = logging.getLogger("serve_nb")

DEFAULT_MAX_BATCH_SIZE = 10
DEFAULT_BATCH_WAIT_TIMEOUT_S = 0.01


class _End:
    """Closes one caller's stream. A class, not an ``object()``: the decorated function travels to replicas
    by value, and a class from this module keeps its identity there (it pickles by reference)."""


def _check_max_batch_size(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"max_batch_size must be integer >= 1, got {value}")
    if value < 1:
        raise ValueError(f"max_batch_size must be an integer >= 1, got {value}")
    return value


def _check_timeout(value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"batch_wait_timeout_s must be a float >= 0, got {value}")
    if value < 0:
        raise ValueError(f"batch_wait_timeout_s must be a float >= 0, got {value}")
    return float(value)


@dataclass
class BatchSettings:
    """One decorated function's settings, shared by every instance's queue and read at each batch."""

    max_batch_size: int
    batch_wait_timeout_s: float
    max_concurrent_batches: int
    batch_size_fn: Callable[[list[Any]], int] | None
    warned: bool = False

    def size(self, items: list[Any]) -> int:
        return self.batch_size_fn(items) if self.batch_size_fn is not None else len(items)


@dataclass(eq=False)
class _Call:
    """One caller's item: its arguments, and where its answer goes."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    model_id: str  # the multiplexed model the caller's request asked for: a batch holds one model's items
    future: asyncio.Future[Any] | None = None  # a one-value answer
    stream: asyncio.Queue[Any] | None = None  # a streamed answer
    enqueued_at: float = 0.0
    gone: bool = False  # the caller gave up (a stream's consumer left)

    @property
    def cancelled(self) -> bool:
        return self.gone or (self.future is not None and self.future.done())

    def fail(self, exc: BaseException) -> None:
        if self.future is not None:
            if not self.future.done():
                self.future.set_exception(exc)
        elif self.stream is not None:
            self.stream.put_nowait(exc)


@dataclass(eq=False)
class BatchQueue:
    """The items waiting for one function (or one instance's method), and the task that runs batches."""

    fn: Callable[..., Any]  # already bound to the instance, for a method
    settings: BatchSettings
    streaming: bool
    items: collections.deque[_Call] = field(default_factory=collections.deque)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _running: set[asyncio.Task[None]] = field(default_factory=set)
    _loop: asyncio.AbstractEventLoop | None = None

    def put(self, call: _Call) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new event loop (a function called from a later asyncio.run)
            self._loop, self.items, self._arrived, self._task = loop, collections.deque(), asyncio.Event(), None
        call.enqueued_at = loop.time()
        self.items.append(call)
        self._arrived.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._batches())

    async def _batches(self) -> None:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self.settings.max_concurrent_batches)
        while True:
            try:
                batch = await self._next_batch(loop)
            except Exception as exc:  # noqa: BLE001 - batch_size_fn raised: its callers get the error, not a hang
                while self.items:
                    self.items.popleft().fail(exc)
                continue
            if not batch:
                continue
            await slots.acquire()
            task = loop.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(lambda t: (self._running.discard(t), slots.release()))

    async def _next_batch(self, loop: asyncio.AbstractEventLoop) -> list[_Call]:
        """Wait for a first item, then until the batch is full or its time is up; take it. A batch holds
        the items of one multiplexed model only (the first item's), so the function sees one model id."""
        while not self.items:
            self._arrived.clear()
            await self._arrived.wait()
        first = self.items[0]
        deadline = first.enqueued_at + self.settings.batch_wait_timeout_s
        while self._size(self._waiting_for(first.model_id)) < self.settings.max_batch_size:
            left = deadline - loop.time()
            if left <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                break
        return self._take(first.model_id)

    def _waiting_for(self, model_id: str) -> list[_Call]:
        return [c for c in self.items if not c.cancelled and c.model_id == model_id]

    def _size(self, calls: Any) -> int:
        """How full ``calls`` are: their count, or ``batch_size_fn`` of their first arguments (Ray Serve's rule)."""
        return self.settings.size([c.args[0] if c.args else None for c in calls])

    def _take(self, model_id: str) -> list[_Call]:
        """The next batch: callers of ``model_id`` still waiting, in order, up to ``max_batch_size`` as
        counted. Callers that gave up are dropped; other models' callers keep their places."""
        batch: list[_Call] = []
        left: collections.deque[_Call] = collections.deque()
        full = False
        for call in self.items:
            if call.cancelled:
                continue
            if not full and call.model_id == model_id:
                if batch and self._size([*batch, call]) > self.settings.max_batch_size:
                    full = True  # this one would overflow it: it starts the next batch
                else:
                    batch.append(call)
                    full = self._size(batch) >= self.settings.max_batch_size
                    continue
            left.append(call)
        self.items = left
        return batch

    async def _run(self, batch: list[_Call]) -> None:
        # Its own task: the model id its callers asked for is the one the function sees.
        set_multiplexed_model_id(batch[0].model_id)
        record_batch_size(len(batch))
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            args, kwargs = _columns(batch)
            if self.streaming:
                await self._stream(batch, args, kwargs)
                return
            results = await self.fn(*args, **kwargs)
            _check_length(results, len(batch))
            for call, result in zip(batch, results):
                if call.future is not None and not call.future.done():
                    call.future.set_result(result)
        except BaseException as exc:  # noqa: BLE001 - every caller of the batch gets the error
            for call in batch:
                call.fail(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            metrics.batch_ran(getattr(self.fn, "__name__", "batch"), len(batch), self.settings.max_batch_size,
                              (started - batch[0].enqueued_at) * 1000, (loop.time() - started) * 1000,
                              len(self.items))

    async def _stream(self, batch: list[_Call], args: list[list[Any]], kwargs: dict[str, list[Any]]) -> None:
        open_calls = set(range(len(batch)))
        async for results in self.fn(*args, **kwargs):
            _check_length(results, len(batch))
            for i, result in enumerate(results):
                if i not in open_calls:
                    continue
                if isinstance(result, StopIteration) or result is StopIteration:
                    open_calls.discard(i)
                    batch[i].stream.put_nowait(_End)  # type: ignore[union-attr]
                elif not batch[i].gone:
                    batch[i].stream.put_nowait(result)  # type: ignore[union-attr]
            if not any(not batch[i].gone for i in open_calls):
                break  # every caller still listening has left
        for i in open_calls:
            batch[i].stream.put_nowait(_End)  # type: ignore[union-attr]


def _columns(batch: list[_Call]) -> tuple[list[list[Any]], dict[str, list[Any]]]:
    """Arguments position by position: ``[[a1, a2], [b1, b2]]`` and ``{"k": [k1, k2]}``."""
    width = len(batch[0].args)
    keys = set(batch[0].kwargs)
    if any(len(c.args) != width or set(c.kwargs) != keys for c in batch):
        raise TypeError(
            "Every call to a @serve.batch function must pass the same positional arguments and the same keyword "
            "arguments (they are batched position by position)."
        )
    return [[c.args[i] for c in batch] for i in range(width)], {k: [c.kwargs[k] for c in batch] for k in keys}


def _check_length(results: Any, expected: int) -> None:
    if not hasattr(results, "__len__") or len(results) != expected:
        got = len(results) if hasattr(results, "__len__") else f"a {type(results).__name__}"
        raise RayServeException(
            f"Batched function doesn't preserve batch size. The input list has length {expected} but the "
            f"returned list has length {got}."
        )


def _is_method_call(fn: Callable[..., Any], wrapper: Callable[..., Any], args: tuple[Any, ...]) -> bool:
    """The wrapper was reached as ``instance.method(...)``: its first argument is the instance."""
    if not args:
        return False
    found = getattr(type(args[0]), fn.__name__, None)
    return found is wrapper


def batch(
    _func: Callable[..., Any] | None = None,
    /,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    batch_wait_timeout_s: float = DEFAULT_BATCH_WAIT_TIMEOUT_S,
    max_concurrent_batches: int = 1,
    batch_size_fn: Callable[[list[Any]], int] | None = None,
) -> Any:
    """Batch calls to an ``async def`` function or method (``@serve.batch`` or ``@serve.batch(...)``)."""
    if _func is not None:
        if not callable(_func):
            raise TypeError("@serve.batch can only be used to decorate functions or methods.")
        if not (inspect.iscoroutinefunction(_func) or inspect.isasyncgenfunction(_func)):
            raise TypeError("Functions decorated with @serve.batch must be 'async def'")
    settings = BatchSettings(
        _check_max_batch_size(max_batch_size), _check_timeout(batch_wait_timeout_s), 1, batch_size_fn
    )
    if not isinstance(max_concurrent_batches, int) or isinstance(max_concurrent_batches, bool) or max_concurrent_batches < 1:
        raise TypeError(f"max_concurrent_batches must be an integer >= 1, got {max_concurrent_batches}")
    settings.max_concurrent_batches = max_concurrent_batches
    if batch_size_fn is not None and not callable(batch_size_fn):
        raise TypeError(f"batch_size_fn must be a callable or None, got {type(batch_size_fn)}")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if not (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)):
            raise TypeError("Functions decorated with @serve.batch must be 'async def'")
        return _wrap(fn, settings)

    return decorate(_func) if _func is not None else decorate


def _wrap(fn: Callable[..., Any], settings: BatchSettings) -> Callable[..., Any]:
    streaming = inspect.isasyncgenfunction(fn)
    attr = f"__serve_nb_batch_queue_{fn.__name__}"
    plain_queue: list[BatchQueue] = []  # a function's one queue (made on first call, on the caller's loop)

    def queue_for(args: tuple[Any, ...]) -> tuple[BatchQueue, tuple[Any, ...]]:
        if _is_method_call(fn, wrapper, args):
            owner, args = args[0], args[1:]
            queue = owner.__dict__.get(attr)
            if queue is None:
                queue = BatchQueue(functools.partial(fn, owner), settings, streaming)
                setattr(owner, attr, queue)
            return queue, args
        if not plain_queue:
            plain_queue.append(BatchQueue(fn, settings, streaming))
        return plain_queue[0], args

    if streaming:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            _warn_if_batches_cannot_fill(settings)
            queue, args = queue_for(args)
            call = _Call(args, kwargs, get_multiplexed_model_id(), stream=asyncio.Queue())
            queue.put(call)
            try:
                while True:
                    item = await call.stream.get()  # type: ignore[union-attr]
                    if item is _End:
                        return
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                call.gone = True
    else:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            _warn_if_batches_cannot_fill(settings)
            queue, args = queue_for(args)
            call = _Call(args, kwargs, get_multiplexed_model_id(), future=asyncio.get_running_loop().create_future())
            queue.put(call)
            return await call.future  # type: ignore[misc]

    def set_max_batch_size(value: int) -> None:
        settings.max_batch_size = _check_max_batch_size(value)
        settings.warned = False

    def set_batch_wait_timeout_s(value: float) -> None:
        settings.batch_wait_timeout_s = _check_timeout(value)

    wrapper.set_max_batch_size = set_max_batch_size  # type: ignore[attr-defined]
    wrapper.set_batch_wait_timeout_s = set_batch_wait_timeout_s  # type: ignore[attr-defined]
    wrapper._get_max_batch_size = lambda: settings.max_batch_size  # type: ignore[attr-defined]
    wrapper._get_batch_wait_timeout_s = lambda: settings.batch_wait_timeout_s  # type: ignore[attr-defined]
    return wrapper


def _warn_if_batches_cannot_fill(settings: BatchSettings) -> None:
    """Once: in a replica whose ``max_ongoing_requests`` is below what a full set of batches needs."""
    if settings.warned:
        return
    settings.warned = True
    limit = current_max_ongoing_requests()
    wanted = settings.max_batch_size * settings.max_concurrent_batches
    if limit is not None and limit < wanted:
        logger.warning(
            "`max_batch_size` (%d) * `max_concurrent_batches` (%d) is larger than `max_ongoing_requests` (%d): "
            "the replica will never fill a batch. Set max_ongoing_requests >= %d.",
            settings.max_batch_size, settings.max_concurrent_batches, limit, wanted,
        )
