"""``DeploymentHandle`` and ``DeploymentResponse``: calling deployments from Python, any thread, any loop.

``remote()`` hands the request to the process's background loop at once and returns a future.
``.result()`` blocks the calling thread only, so it works in a notebook cell whose loop is running;
``await`` works on any event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import concurrent.futures
from enum import Enum
from typing import Any, AsyncIterator, Iterator

from serve_nb.core.keywords import keyword_names, reject_unknown_keywords, reject_unsupported_values
from serve_nb.data.context import request_for_call
from serve_nb.data.request import Request, RequestKind
from serve_nb.data.router import MAX_IDEMPOTENT_RETRIES
from serve_nb.exceptions import RayServeException, RequestCancelledError
from serve_nb.types import DeploymentID

_UNSET: Any = object()
#: ``handle.options()`` keywords of Ray Serve 2.60 that serve_nb does not implement: accepted only when not given.
_UNSUPPORTED_HANDLE_OPTIONS = ("session_id", "_prefer_local_routing", "_by_reference",
                               "request_serialization", "response_serialization")
#: Items a stream may run ahead of a slow consumer before the pump stops reading from the replica.
STREAM_BUFFER_ITEMS = 64


def _client() -> Any:
    from serve_nb.data.client import get_client

    client = get_client()
    if client is None:
        raise RayServeException("serve_nb is not running in this Ray cluster; call serve.run() or serve.start() first.")
    return client


class DeploymentResponse:
    """The future result of one handle call. Await it, or call ``.result()``; both work repeatedly."""

    __slots__ = ("_future", "_bg")

    def __init__(self, future: "concurrent.futures.Future[Any]", bg: Any) -> None:
        self._future = future
        self._bg = bg

    def result(self, timeout_s: float | None = None, *, _skip_asyncio_check: bool = False) -> Any:
        """Block this thread until the value is there; after ``timeout_s`` the request is cancelled (its
        slot freed, the replica told to stop it) and TimeoutError raised, so a caller that gave up leaves
        nothing running for it."""
        if self._bg.in_loop_thread():
            raise RuntimeError(
                "DeploymentResponse.result() cannot be called on serve_nb's own event loop thread; use await."
            )
        try:
            return self._future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            if self._future.done():
                raise
            self._future.cancel()
            raise TimeoutError(f"Timed out after {timeout_s}s waiting for the response; the request was cancelled.") from None
        except concurrent.futures.CancelledError:
            raise RequestCancelledError("The request was cancelled.") from None

    def __await__(self) -> Any:
        return self._await().__await__()

    async def _await(self) -> Any:
        try:
            return await asyncio.wrap_future(self._future)
        except asyncio.CancelledError:
            if self._future.cancelled():
                raise RequestCancelledError("The request was cancelled.") from None
            raise

    def cancel(self) -> None:
        """Cancel the request; the replica stops working on it if it already started."""
        self._future.cancel()

    def done(self) -> bool:
        return self._future.done()

    def __repr__(self) -> str:
        return f"DeploymentResponse(done={self._future.done()})"

    def __reduce__(self) -> Any:
        # Only a top-level argument of a handle call is resolved to its value (as in Ray Serve); one
        # nested in a list or dict would otherwise fail deep inside pickle with a confusing message.
        raise RayServeException(
            "`DeploymentResponse` is not serializable. If you are passing the `DeploymentResponse` in a nested "
            "object (e.g. a list or dictionary) to a downstream deployment handle call, that is no longer "
            "supported. Please only pass `DeploymentResponse` objects as top level arguments."
        )


class _Next(Enum):
    """What the stream's pump hands the iterating thread next."""

    ITEM = 1
    END = 2
    ERROR = 3


class DeploymentResponseGenerator:
    """Items streamed by a generator method (``handle.options(stream=True)``); iterate sync or async."""

    def __init__(self, client: Any, dep: DeploymentID, method: str, args: tuple, kwargs: dict, retries: int = 0,
                 model_id: str = "") -> None:
        self._bg = client.bg
        self._queue: asyncio.Queue[tuple[_Next, Any]] = asyncio.Queue(maxsize=STREAM_BUFFER_ITEMS)  # binds to a loop on first use
        request = Request(RequestKind.STREAM, method, args, kwargs, model_id, *request_for_call())
        self._task = self._bg.submit(self._pump(client, dep, request, retries))

    async def _pump(self, client: Any, dep: DeploymentID, request: Request, retries: int) -> None:
        try:
            if request.args or request.kwargs:
                args, kwargs = await _resolve_responses(request.args, request.kwargs)
                request = request.with_args(args, kwargs)
            stream = client.router(dep).stream(request, retries=retries)
            async with contextlib.aclosing(stream) as items:  # cancelled: the router's slot is freed now
                async for item in items:
                    await self._queue.put((_Next.ITEM, item))
            await self._queue.put((_Next.END, None))
        except asyncio.CancelledError:
            self._queue.put_nowait((_Next.ERROR, RequestCancelledError("The request was cancelled.")))
            raise
        except BaseException as exc:  # noqa: BLE001
            await self._queue.put((_Next.ERROR, exc))

    async def _next(self) -> Any:
        kind, value = await self._queue.get()
        if kind is _Next.ITEM:
            return value
        self._queue.put_nowait((kind, value))  # stay finished for further calls
        if kind is _Next.END:
            raise StopAsyncIteration
        raise value

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return self._bg.submit(self._next()).result()
        except StopAsyncIteration:
            raise StopIteration from None

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        return await asyncio.wrap_future(self._bg.submit(self._next()))

    def cancel(self) -> None:
        self._task.cancel()


class DeploymentHandle:
    """Calls one deployment: ``handle.remote(...)``, ``handle.method.remote(...)``, ``handle.options(...)``.

    Cheap to create and to pickle: it connects lazily in whichever process uses it.
    """

    def __init__(self, deployment_name: str, app_name: str = "default", *, method_name: str = "__call__",
                 stream: bool = False, idempotent: bool = False, multiplexed_model_id: str = "") -> None:
        self._dep = DeploymentID(app_name, deployment_name)
        self._method = method_name
        self._stream = stream
        self._model_id = multiplexed_model_id
        # How often a call is sent again if its replica dies mid-request (it may have run): only if idempotent.
        self._retries = MAX_IDEMPOTENT_RETRIES if idempotent else 0

    @property
    def deployment_name(self) -> str:
        return self._dep.name

    @property
    def app_name(self) -> str:
        return self._dep.app

    def options(
        self,
        *,
        method_name: str = _UNSET,
        stream: bool = _UNSET,
        multiplexed_model_id: str = _UNSET,
        session_id: str = _UNSET,
        _prefer_local_routing: bool = _UNSET,
        _by_reference: bool = _UNSET,
        request_serialization: str = _UNSET,
        response_serialization: str = _UNSET,
        use_new_handle_api: bool = _UNSET,
        idempotent: bool = _UNSET,
        **unknown: Any,
    ) -> "DeploymentHandle":
        """A handle with some call options replaced (Ray Serve 2.60's keywords; ``use_new_handle_api``, from
        older Ray Serve, is accepted and ignored). A misspelt keyword or a Ray Serve option serve_nb does not
        implement raises TypeError at once, rather than sending requests other than the ones asked for.

        ``idempotent=True`` (serve_nb's own) declares the calls safe to run twice: one whose replica dies
        before it answers is sent to another replica, up to 3 times, instead of failing with
        ReplicaUnavailableError. A call that was never run (replica full or stopping) is always sent
        again, idempotent or not; a stream only until its first item arrives.

        ``multiplexed_model_id="m"`` routes the calls to a replica holding model ``m`` when one can take
        them, and the replica's code reads it with ``serve.get_multiplexed_model_id()``."""
        if unknown:  # checks cost nothing on the hot path (handle.method goes through here)
            reject_unknown_keywords("handle.options()", unknown, keyword_names(DeploymentHandle.options))
        unsupported = (session_id, _prefer_local_routing, _by_reference,
                       request_serialization, response_serialization)
        if any(value is not _UNSET for value in unsupported):
            given = {name: value for name, value in zip(_UNSUPPORTED_HANDLE_OPTIONS, unsupported) if value is not _UNSET}
            reject_unsupported_values("handle.options()", given, {})
        if idempotent is not _UNSET and not isinstance(idempotent, bool):
            raise TypeError(f"handle.options(idempotent=...) must be True or False, got {idempotent!r}.")
        if multiplexed_model_id is not _UNSET and not isinstance(multiplexed_model_id, str):
            raise TypeError(
                f"handle.options(multiplexed_model_id=...) must be a string, got {type(multiplexed_model_id).__name__}."
            )
        return DeploymentHandle(
            self._dep.name,
            self._dep.app,
            method_name=self._method if method_name is _UNSET else method_name,
            stream=self._stream if stream is _UNSET else bool(stream),
            idempotent=bool(self._retries) if idempotent is _UNSET else idempotent,
            multiplexed_model_id=self._model_id if multiplexed_model_id is _UNSET else multiplexed_model_id,
        )

    def __getattr__(self, name: str) -> "DeploymentHandle":
        if name.startswith("_"):
            raise AttributeError(name)
        return self.options(method_name=name)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Send the request now; returns a DeploymentResponse (or a generator with stream=True)."""
        client = _client()
        if self._stream:
            return DeploymentResponseGenerator(client, self._dep, self._method, args, kwargs, self._retries,
                                               self._model_id)
        request = Request(RequestKind.CALL, self._method, args, kwargs, self._model_id, *request_for_call())
        call = _call(client, self._dep, request, self._retries)
        return DeploymentResponse(client.bg.submit(call), client.bg)

    def __reduce__(self) -> Any:
        return (_rebuild_handle, (self._dep.name, self._dep.app, self._method, self._stream, bool(self._retries),
                                  self._model_id))

    def __repr__(self) -> str:
        extra = f", method_name={self._method!r}" if self._method != "__call__" else ""
        extra += ", idempotent=True" if self._retries else ""
        extra += f", multiplexed_model_id={self._model_id!r}" if self._model_id else ""
        return f"DeploymentHandle(deployment={self._dep.name!r}, app={self._dep.app!r}{extra})"


def _rebuild_handle(name: str, app: str, method: str, stream: bool, idempotent: bool = False,
                    model_id: str = "") -> DeploymentHandle:
    return DeploymentHandle(name, app, method_name=method, stream=stream, idempotent=idempotent,
                            multiplexed_model_id=model_id)


async def _call(client: Any, dep: DeploymentID, request: Request, retries: int) -> Any:
    """One request, on the background loop: resolve response arguments, then route it."""
    if request.args or request.kwargs:
        args, kwargs = await _resolve_responses(request.args, request.kwargs)
        request = request.with_args(args, kwargs)
    return await client.router(dep).call(request, retries=retries)


async def _resolve_responses(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Top-level DeploymentResponse arguments become their values (the caller never blocks on them)."""
    if not any(isinstance(a, DeploymentResponse) for a in args) and not any(
        isinstance(v, DeploymentResponse) for v in kwargs.values()
    ):
        return args, kwargs
    args = tuple([await a if isinstance(a, DeploymentResponse) else a for a in args])
    kwargs = {k: (await v if isinstance(v, DeploymentResponse) else v) for k, v in kwargs.items()}
    return args, kwargs
