"""The replica actor: runs one copy of the user's class or function.

Ray starts and stops it; requests arrive on its channel server, not as Ray actor calls.
User code never blocks the actor's event loop: sync methods run on a thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import concurrent.futures
import contextvars
import dataclasses
import functools
import inspect
import os
import secrets
import time
from typing import Any, AsyncIterator, Callable

import ray

from serve_nb.data.channel import ChannelServer, shm
from serve_nb.data.context import (
    ReplicaContext, drain_batch_sizes, loaded_model_ids, set_max_ongoing_requests, set_multiplexed_model_id,
    set_replica_context, set_request,
)
from serve_nb.data import logcapture
from serve_nb.data.http.replica_adapter import HTTPAdapter
from serve_nb.data.objects import Outcome
from serve_nb.core.log_format import CallOutcome
from serve_nb.data.replica_observer import RequestObserver, observe_replica, reconfigure_logging
from serve_nb.data.request import Request, RequestKind, Wire
from serve_nb.common.messages import InitResult, ReplicaConfig, ReplicaInit, ReplicaMetadata
from serve_nb.common.serialization import loads, pack_exception, user_traceback
from serve_nb.exceptions import RayServeException
from serve_nb.types import ReplicaInfo

#: In-flight counts go to the controller at most this often; autoscaling averages over seconds.
REPORT_PERIOD_S = 0.25
#: A report at least this often even when nothing changed, so the controller sees the replica alive.
HEARTBEAT_S = 5.0
#: Before GOODBYE, time for routers to hear of the removal on the long-poll and stop sending here.
GOODBYE_BEAT_S = 0.2
#: Threads for sync user code: at least this many, so health checks and reconfigure calls do not
#: wait behind requests when max_ongoing_requests is small.
MIN_THREADS = 4
#: A large reply waits this long for its caller to take it through the object store (a caller that died
#: in between never will); then it is dropped.
STASH_TTL_S = 60.0
#: glibc's mallopt parameters, and the values a replica uses: freed memory up to the trim threshold stays with
#: the process, and blocks below the mmap threshold come from the heap. glibc's defaults hand memory back and
#: map it again on every large request (a 1 MiB body faulted ~300 pages in per request at 8 connections);
#: kept, request buffers reuse warm pages. The cost: up to this much freed memory stays in each replica.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_FREED_BYTES, HEAP_BLOCKS_BELOW_BYTES = 128 * 1024 * 1024, 32 * 1024 * 1024


def keep_freed_memory() -> None:
    """Tune glibc's allocator for request buffers (see KEEP_FREED_BYTES); elsewhere than glibc, nothing."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES)
        libc.mallopt(M_MMAP_THRESHOLD, HEAP_BLOCKS_BELOW_BYTES)
    except (OSError, AttributeError):
        pass


def public_methods(obj: Any, is_class: bool) -> tuple[str, ...]:
    """The names a handle may call: public methods, plus __call__ if defined."""
    if not is_class:
        return ("__call__",)
    cls = type(obj)
    names = [n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n, None))]
    if any("__call__" in c.__dict__ for c in cls.__mro__ if c is not object):
        names.insert(0, "__call__")
    return tuple(n for n in names if n not in ("reconfigure", "check_health"))


class ReplicaCore:
    """One replica's state and request path. A plain object: Ray wraps every method of an actor
    class in a tracing shim, which the per-request path must not pay for."""

    def __init__(self, init: ReplicaInit) -> None:
        self._init = init
        self._obj: Any = None
        self._http: HTTPAdapter | None = None
        self._methods: tuple[str, ...] = ()
        self._server: ChannelServer | None = None
        self._info: ReplicaInfo | None = None
        self._config: ReplicaConfig = init.config  # replaced whole by reconfigure() once applied
        self._max_ongoing = init.config.max_ongoing_requests  # per-request copy of self._config's
        self._user_config: Any = None
        self._ongoing = 0
        self._draining = False
        self._stopped = False
        self._started_at = time.time()
        self._logs = logcapture.LogBuffer()
        # Records nothing until initialize() (unit tests drive a replica without Ray, metrics or log files).
        self._observer = RequestObserver(init.app, init.deployment, init.replica_id, None, None)
        self._reporter: asyncio.Task[None] | None = None
        self._stash: dict[str, tuple[float, Any]] = {}  # token -> (when, large reply not yet taken)
        self._idle: asyncio.Event | None = None  # set when draining and the last request has finished
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(MIN_THREADS, init.config.max_ongoing_requests), thread_name_prefix="serve_nb-replica"
        )

    # -- lifecycle (delegated from the actor) -----------------------------------------------------

    async def initialize(self) -> InitResult:
        """Construct the user's object and apply the ReplicaConfig it was created with."""
        init = self._init
        user_config = self._config.user_config
        try:
            import ray

            keep_freed_memory()
            from serve_nb import ray_private

            self._observer = observe_replica(init.app, init.deployment, init.replica_id,
                                             self._config.logging_config, self._logs.add, ray_private.session_dir())
            logcapture.install(self._logs, self._observer.handler)
            set_replica_context(ReplicaContext(init.app, init.deployment, init.replica_id))
            set_max_ongoing_requests(self._config.max_ongoing_requests)
            target = loads(init.def_blob)
            args, kwargs = loads(init.args_blob)
            if init.is_class and inspect.iscoroutinefunction(getattr(target, "__init__", None)):
                # ``async def __init__`` (async model loading), as Ray Serve allows: create, then await it here.
                self._obj = target.__new__(target)
                await self._obj.__init__(*args, **kwargs)
            elif init.is_class:
                self._obj = await self._in_thread(target, *args, **kwargs)
            else:
                self._obj = target
            set_replica_context(ReplicaContext(init.app, init.deployment, init.replica_id, self._obj))
            if user_config is not None:
                await self._call_user_reconfigure(user_config)
            self.accept_requests_for(self._obj)
            if init.controller is not None:
                from serve_nb.data.client import install_client

                install_client(init.controller, init.cluster_info)
            node_id = ray.get_runtime_context().get_node_id()
            from serve_nb.data.channel import auth, tls
            from serve_nb.data.channel.server import listen_host

            # Loopback while the whole cluster is on this machine; the node's IP once other machines
            # may call (a replica started before a machine joins stays loopback-only: see listen_host).
            node_ips = [n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")]
            host = listen_host(ray.util.get_node_ip_address(), node_ips)
            # Made here, returned to the controller over Ray: never in creation args or a checkpoint.
            secret = auth.new_secret()
            ray_token = ray_private.ray_auth_token(only_if_enabled=True)
            key = auth.channel_key(secret, ray_token)
            self._server = ChannelServer(self, key, tls=tls.server_context_from_env())
            address = await self._server.start(host, node_id, socket_base=ray_private.session_dir())
            self._info = ReplicaInfo(
                init.replica_id, address.host, address.port, address.uds_path, node_id, os.getpid(),
                secret=secret, key_uses_ray_token=ray_token is not None,
            )
            if init.controller is not None:
                self._reporter = asyncio.get_running_loop().create_task(self._report_loop(init.controller))
            self._observer.started()
            return InitResult(ok=True, info=self._info, methods=self._methods)
        except BaseException as exc:  # noqa: BLE001 - the user's constructor error goes to status
            return InitResult(ok=False, error=user_traceback(exc), log_lines=tuple(self._logs.drain()))

    async def reconfigure(self, config: ReplicaConfig) -> str | None:
        """Apply a whole new ReplicaConfig in place; returns the user's traceback if their
        reconfigure raised (the config version then stays the old one)."""
        self._max_ongoing = config.max_ongoing_requests
        set_max_ongoing_requests(config.max_ongoing_requests)
        try:
            if config.user_config is not None and config.user_config != self._user_config:
                await self._call_user_reconfigure(config.user_config)
        except BaseException as exc:  # noqa: BLE001
            return user_traceback(exc)
        if config.logging_config != self._config.logging_config:
            from serve_nb import ray_private

            reconfigure_logging(self._observer, config.logging_config, ray_private.session_dir())
        self._config = config
        return None

    async def check_health(self) -> None:
        fn = getattr(self._obj, "check_health", None) if self._init.is_class else None
        if fn is not None:
            await self._invoke(fn, (), {})

    async def prepare_for_shutdown(self, timeout_s: float) -> None:
        """Stop taking requests, let in-flight ones finish (for at most ``timeout_s``, then cancel
        them), then run the user's ``__del__`` once."""
        if self._stopped:
            return
        self._draining = True
        # Routers learn of the removal through the long-poll; give them a beat before saying goodbye.
        await asyncio.sleep(min(self._config.graceful_shutdown_wait_loop_s, GOODBYE_BEAT_S, timeout_s))
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.close_gracefully(), max(0.0, timeout_s - GOODBYE_BEAT_S))
            except asyncio.TimeoutError:
                self._server.abort()
        if self._ongoing:  # calls that came through the object store, not the channel
            self._idle = asyncio.Event()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), max(0.0, timeout_s - GOODBYE_BEAT_S))
        self._stopped = True
        shm.close_process_arena()  # segments this replica sent as a caller: it is killed next, with no atexit
        if self._reporter is not None:
            self._reporter.cancel()
        finalizer = getattr(type(self._obj), "__del__", None) if self._init.is_class else None
        if finalizer is not None:
            try:
                await self._in_thread(finalizer, self._obj)
            except Exception:
                pass
        self._observer.close()  # its last requests' metrics and log lines (and __del__'s), before the process goes

    async def _report_loop(self, controller: Any) -> None:
        """Push the in-flight count and the loaded models when they change (at most every ``REPORT_PERIOD_S``),
        new log lines, batch sizes and the requests finished since the last report; a heartbeat every
        ``HEARTBEAT_S``. The controller averages the counts for autoscaling, passes the models on to routers,
        and shows all of it in ``serve.status()`` and widgets (requests/s, latency, errors)."""
        last_value, last_models, last_sent = -1, (), 0.0
        while not self._stopped:
            await asyncio.sleep(REPORT_PERIOD_S)
            lines = self._logs.drain()
            models, batches = loaded_model_ids(), drain_batch_sizes()
            requests = self._observer.tally.drain()
            self._observer.ongoing(self._ongoing)
            now = time.monotonic()
            if (self._ongoing != last_value or models != last_models or lines or batches or requests
                    or now - last_sent >= HEARTBEAT_S):
                last_value, last_models, last_sent = self._ongoing, models, now
                try:
                    await controller.record_replica_metrics.remote(
                        self._init.app, self._init.deployment, self._init.replica_id, last_value, lines, models,
                        batches, requests,
                    )
                except Exception:
                    last_models = ()  # controller restarting: the next report catches up, models included

    async def listen_on_node_ip(self) -> ReplicaInfo:
        """Another machine joined the cluster: also listen on this node's IP (the address Ray uses for it),
        so callers there can reach a replica that bound loopback while the cluster was one machine."""
        import ray

        info, server = self._info, self._server
        if info is None or server is None:
            raise RuntimeError("the replica has not started its channel yet")  # the controller asks only serving ones
        node_ip = ray.util.get_node_ip_address()
        if info.host == node_ip:
            return info  # already reachable there
        port = await server.listen_tcp(node_ip)
        self._info = dataclasses.replace(info, host=node_ip, port=port)
        return self._info

    def metadata(self) -> ReplicaMetadata:
        return ReplicaMetadata(
            self._init.replica_id, self._init.version, self._config.config_version, self._info, self._methods,
            self._started_at,
        )

    @property
    def ongoing(self) -> int:
        return self._ongoing

    # -- the channel's RequestHandler ----------------------------------------------------------

    def accept_requests_for(self, obj: Any) -> None:
        """Send requests to ``obj`` (the user's instance, or their function): the methods a handle
        may call, and the HTTP entry point. ``initialize`` calls it; unit tests call it without Ray."""
        self._obj = obj
        self._methods = public_methods(obj, self._init.is_class)
        self._http = HTTPAdapter(obj, self._init.is_class, self._invoke, self._init.deployment,
                                 on_user_error=lambda route, exc: self._observer.user_error(route, exc))

    def observe_with(self, observer: RequestObserver) -> None:
        """Record requests with ``observer``: ``initialize`` makes the replica's; unit tests pass their own."""
        self._observer = observer

    def try_acquire(self) -> bool:
        if self._draining or self._ongoing >= self._max_ongoing:
            return False
        self._ongoing += 1
        return True

    def release(self) -> None:
        self._ongoing -= 1
        if self._idle is not None and not self._ongoing:
            self._idle.set()

    def stash(self, value: Any) -> str:
        """Keep a reply too large for the channel; its caller takes it with ``take_stashed``."""
        now = time.monotonic()
        for token in [t for t, (at, _) in self._stash.items() if now - at > STASH_TTL_S]:
            del self._stash[token]
        token = secrets.token_hex(8)
        self._stash[token] = (now, value)
        return token

    def take_stashed(self, token: str) -> Any:
        entry = self._stash.pop(token, None)
        if entry is None:
            raise RayServeException(f"The reply was not taken within {STASH_TTL_S:g} s of being ready and was dropped.")
        return entry[1]

    async def call_with_objects(self, wire: Wire) -> tuple[Outcome, Any]:
        """A call that came through Ray's object store (large arguments): admitted, run and answered like
        one from the channel, its reply returned through Ray too."""
        if not self.try_acquire():
            return Outcome.REJECTED, None
        try:
            return Outcome.OK, await self.handle(Request.from_wire(wire))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - the user's error goes back to the caller
            return Outcome.ERROR, pack_exception(exc)
        finally:
            self.release()

    def handle(self, request: Request) -> Any:
        """A coroutine for a call; an async iterator for a stream, an HTTP request or a WebSocket. Called in
        the request's own task, so the model id set here is this request's alone."""
        if request.model_id:
            set_multiplexed_model_id(request.model_id)
        set_request(request.request_id, request.route)
        kind = request.kind
        if kind is RequestKind.CALL:
            return self._observed_call(request)
        if kind is RequestKind.STREAM:
            return self._observer.stream(request, self._stream(request.method, request.args, request.kwargs))
        assert self._http is not None  # set in initialize(), before the channel accepts anything
        if kind is RequestKind.WEBSOCKET:
            return self._observer.stream(request, self._http.websocket(*request.args))
        observer = self._observer
        return self._http.handle(*request.args, done=functools.partial(observer.http_done, request, time.perf_counter()))

    async def _observed_call(self, request: Request) -> Any:
        """A handle call, timed and recorded (metrics, access line, live figures) in the same coroutine: a
        wrapping one cost every call a frame."""
        start = time.perf_counter()
        try:
            result = await self._call(request.method, request.args, request.kwargs)
        except asyncio.CancelledError:
            self._observer.call_done(request, start, CallOutcome.CANCELLED, None)
            raise
        except BaseException as exc:
            self._observer.call_done(request, start, CallOutcome.ERROR, exc)
            raise
        self._observer.call_done(request, start, CallOutcome.OK, None)
        return result

    async def _call(self, method: str, args: tuple, kwargs: dict) -> Any:
        fn = self._resolve(method)
        if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
            raise _returned_a_generator(method)  # calling it would run none of its code: refuse first
        result = await self._invoke(fn, args, kwargs)
        if inspect.isgenerator(result) or inspect.isasyncgen(result):
            raise _returned_a_generator(method)
        return result

    async def _stream(self, method: str, args: tuple, kwargs: dict) -> AsyncIterator[Any]:
        """Stream what the method returns: a generator function's items, or those of the generator a
        plain method returns (Ray Serve decides by the result, so a method may hand one on)."""
        fn = self._resolve(method)
        if inspect.isasyncgenfunction(fn):
            items: Any = fn(*args, **kwargs)
        elif inspect.isgeneratorfunction(fn):
            items = fn(*args, **kwargs)  # creating it runs none of the user's code
        else:
            items = await self._invoke(fn, args, kwargs)
        if inspect.isasyncgen(items):
            async with contextlib.aclosing(items):  # the user's cleanup runs on cancel
                async for item in items:
                    yield item
            return
        if inspect.isgenerator(items):
            sentinel = object()
            while True:
                item = await self._in_thread(next, items, sentinel)
                if item is sentinel:
                    return
                yield item
        raise TypeError(
            f"Called method '{method}' with `handle.options(stream=True)` but it did not return a generator."
        )

    def _resolve(self, method: str) -> Callable[..., Any]:
        if not self._init.is_class:
            if method != "__call__":
                raise AttributeError(
                    f"Deployment '{self._init.deployment}' is a function; only __call__ can be called, not '{method}'."
                )
            return self._obj
        fn = getattr(self._obj, method, None) if (method == "__call__" or not method.startswith("_")) else None
        if fn is None or not callable(fn) or (method == "__call__" and "__call__" not in self._methods):
            raise AttributeError(
                f"Deployment '{self._init.deployment}' has no method '{method}'. "
                f"Available methods: {', '.join(self._methods) or '(none)'}."
            )
        return fn

    async def _invoke(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):
            return await fn(*args, **kwargs)
        result = await self._in_thread(fn, *args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _in_thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def _call_user_reconfigure(self, user_config: Any) -> None:
        fn = getattr(self._obj, "reconfigure", None)
        if fn is None:
            raise AttributeError(
                f"user_config was given, but deployment '{self._init.deployment}' has no reconfigure(config) method."
            )
        await self._invoke(fn, (user_config,), {})
        self._user_config = user_config


def _returned_a_generator(method: str) -> TypeError:
    """Ray Serve's words, which code written for it may match on."""
    return TypeError(
        f"Method '{method}' returned a generator. You must use `handle.options(stream=True)` to call "
        "generators on a deployment."
    )


#: The replica actor's concurrency group for ``alive``: its own thread and event loop (``replica_options``).
LIVENESS_GROUP = "liveness"


class ReplicaActor:
    """The Ray actor around a ReplicaCore: lifecycle calls from the controller only."""

    def __init__(self, init: ReplicaInit) -> None:
        self._core = ReplicaCore(init)

    async def initialize(self) -> InitResult:
        return await self._core.initialize()

    async def reconfigure(self, config: ReplicaConfig) -> str | None:
        return await self._core.reconfigure(config)

    async def check_health(self) -> None:
        await self._core.check_health()

    async def prepare_for_shutdown(self, timeout_s: float) -> None:
        await self._core.prepare_for_shutdown(timeout_s)

    async def wait_for_death(self) -> None:
        """Never returns: the controller awaits it to learn at once when this process dies."""
        await asyncio.Event().wait()

    async def ping(self) -> bool:
        """Answers as soon as Ray has placed the actor (even while the constructor runs)."""
        return True

    @ray.method(concurrency_group=LIVENESS_GROUP)
    async def alive(self) -> bool:
        """Answers from a thread of its own, so it tells a frozen node (no answer) from a replica whose event
        loop user code is blocking (an answer): the controller replaces only the first."""
        return True

    async def get_metadata(self) -> ReplicaMetadata:
        return self._core.metadata()

    async def listen_on_node_ip(self) -> ReplicaInfo:
        return await self._core.listen_on_node_ip()

    async def call_with_objects(self, wire: Wire) -> tuple[Outcome, Any]:
        """A handle call with large arguments (``serve_nb.data.objects``): they arrive through Ray's object store."""
        return await self._core.call_with_objects(wire)

    async def take_stashed(self, token: str) -> Any:
        """A large reply to a channel call, returned through Ray's object store."""
        return self._core.take_stashed(token)
