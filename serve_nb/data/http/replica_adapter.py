"""HTTP inside a replica: rebuild the request the proxy forwarded, run the user's code, stream the reply.

A plain deployment gets a real ``starlette.requests.Request`` on ``__call__``; an ``@serve.ingress``
class serves its ASGI app. The app's ASGI response messages go back unchanged, so streaming
responses stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
from typing import Any, AsyncIterator, Awaitable, Callable

from serve_nb.common.serialization import user_traceback
from serve_nb.core.log_format import CallOutcome
from serve_nb.data.channel.buffers import Pieces
from serve_nb.data.channel.duplex import ReceivedItems
from serve_nb.data.context import current_request
from serve_nb.data.http.asgi import RESPONSE_BODY, RESPONSE_START, ASGIApp, Message, Receive, Scope, Send
from serve_nb.data.http.replica_websocket import serve_websocket
from serve_nb.ingress import ASGI_ATTR, is_builder

logger = logging.getLogger("serve_nb.replica")

_DONE = object()
#: Response messages an app may send ahead of the channel taking them. Past it the app's ``send`` waits, as
#: it would under uvicorn's flow control, so a client that does not read holds the app back instead of a
#: queue growing in the replica without bound.
SEND_AHEAD = 8

Invoke = Callable[[Callable[..., Any], tuple, dict], Awaitable[Any]]


def to_response(result: Any) -> Any:
    """Turn a handler's return value into a starlette Response, as Ray Serve users expect."""
    from starlette.responses import JSONResponse, PlainTextResponse, Response

    if isinstance(result, Response):
        return result
    if result is None:
        return Response(status_code=200)
    if isinstance(result, str):
        return PlainTextResponse(result)
    if isinstance(result, (bytes, bytearray, memoryview)):
        return Response(bytes(result), media_type="application/octet-stream")
    if hasattr(result, "model_dump") and callable(result.model_dump):  # pydantic v2
        return JSONResponse(result.model_dump(mode="json"))
    if hasattr(result, "dict") and callable(result.dict) and hasattr(result, "__fields__"):  # pydantic v1
        return JSONResponse(json.loads(result.json()))
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return JSONResponse(dataclasses.asdict(result))
    try:
        return JSONResponse(result)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"Cannot turn a {type(result).__name__} into an HTTP response: return str, bytes, a dict/list, "
            f"a pydantic model, a dataclass or a starlette Response ({exc})."
        ) from None


def bind_class_routes(app: Any, instance: Any) -> None:
    """FastAPI routes declared on the class's methods (``@app.get``, ``@app.websocket``...) get this
    replica's bound methods as endpoints."""
    try:
        from fastapi.routing import APIRoute, APIWebSocketRoute
    except ImportError:  # plain Starlette or another ASGI framework: nothing to bind
        return
    cls = type(instance)
    methods = {id(fn): name for klass in cls.__mro__ for name, fn in vars(klass).items() if inspect.isfunction(fn)}
    params = {kind: list(inspect.signature(kind.__init__).parameters)[3:]  # after self, path, endpoint
              for kind in (APIRoute, APIWebSocketRoute)}
    routes = app.router.routes
    for i, route in enumerate(routes):
        kind = next((k for k in params if isinstance(route, k)), None)
        if kind is not None and id(route.endpoint) in methods:
            bound = getattr(instance, methods[id(route.endpoint)])
            kwargs = {p: getattr(route, p) for p in params[kind] if hasattr(route, p)}
            routes[i] = kind(route.path, bound, **kwargs)


def _log_late_error(task: "asyncio.Task[None]") -> None:
    """Errors raised after the response went out (e.g. re-raised by Starlette's error middleware)."""
    if not task.cancelled() and task.exception() is not None:
        logger.debug("handler raised after responding:\n%s", user_traceback(task.exception()))

#: How an HTTP request ended, for the replica's records: (status answered or None, outcome, error raised here).
HttpDone = Callable[[int | None, CallOutcome, BaseException | None], None]


class HTTPAdapter:
    """Per-replica HTTP entry point."""

    def __init__(self, obj: Any, is_class: bool, invoke: Invoke, deployment: str,
                 on_user_error: Callable[[str, BaseException], None] | None = None) -> None:
        self._obj = obj
        self._invoke = invoke
        self._deployment = deployment
        self._on_user_error = on_user_error  # the route and the user's exception that made a 500
        self._asgi: ASGIApp | None = None
        if is_class:
            app = getattr(type(obj), ASGI_ATTR, None)
            if app is not None:
                if is_builder(app):
                    app = app()
                if hasattr(app, "router"):
                    bind_class_routes(app, obj)
                self._asgi = app
        self._call: Callable[..., Any] | None = None
        self._takes_request = True
        if self._asgi is None:
            fn = getattr(obj, "__call__", None) if is_class else obj
            if fn is not None:
                self._call = fn
                try:
                    self._takes_request = len(inspect.signature(fn).parameters) > 0
                except (TypeError, ValueError):
                    self._takes_request = True

    async def handle(
        self, scope: Scope, body: bytes | Pieces, debug_errors: bool = False,
        rest: AsyncIterator[bytes] | bool = False, done: HttpDone | None = None,
    ) -> AsyncIterator[list[Message]]:
        """Run the app on one request; yield its response messages as the app sent them. ``done`` hears how
        it ended: the status answered (None if none), and whether it finished, was cancelled or failed here.

        ``body`` is the request body, or its first part when ``rest`` (the chunks still arriving on
        the channel) follows; the app reads them as ASGI ``http.request`` messages, as they come, and
        a body that came as ``Pieces`` one message per piece (joining them would only copy them).
        The start message is held back until the first body message and both go in one batch, so
        an app that fails in between still becomes a clean 500; then each body message alone.
        """
        queue: asyncio.Queue[Any] = asyncio.Queue()
        disconnected = asyncio.Event()
        chunks = None if isinstance(rest, bool) else rest.__aiter__()
        head = (body.pieces or [b""]) if isinstance(body, Pieces) else [body]
        head_sent = 0

        async def receive() -> Message:
            nonlocal head_sent, chunks
            if head_sent < len(head):
                head_sent += 1
                more = head_sent < len(head) or chunks is not None
                return {"type": "http.request", "body": head[head_sent - 1], "more_body": more}
            if chunks is not None:
                try:
                    return {"type": "http.request", "body": await chunks.__anext__(), "more_body": True}
                except StopAsyncIteration:
                    chunks = None
                    return {"type": "http.request", "body": b"", "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        room = asyncio.Event()  # set while the app may send more: it is held to SEND_AHEAD unsent messages
        room.set()

        async def send(message: Message) -> None:
            queue.put_nowait(message)
            if queue.qsize() >= SEND_AHEAD:  # its reply is not being taken (a client that does not read)
                room.clear()
                await room.wait()

        # A body that is here whole, in one piece, is handed to a plain ``__call__``'s Request as already read.
        whole = head[0] if len(head) == 1 and chunks is None else None
        task = asyncio.get_running_loop().create_task(self._run(scope, receive, send, whole))
        task.add_done_callback(lambda _: queue.put_nowait(_DONE))
        task.add_done_callback(_log_late_error)
        started = False
        finished = False
        status: int | None = None
        outcome, failure = CallOutcome.ERROR, None
        try:
            pending_start: Message | None = None
            while True:
                message = await queue.get()
                if not room.is_set() and queue.qsize() < SEND_AHEAD:
                    room.set()
                if message is _DONE:
                    exc = task.exception() if not task.cancelled() else None
                    if not started:
                        answer = self._error_response(exc, scope, debug_errors)
                        status = answer[0]["status"]
                        yield answer
                    elif exc is not None:
                        logger.error("Error after the response started:\n%s", user_traceback(exc))
                    finished = True
                    return
                kind = message["type"]
                if kind == RESPONSE_START:
                    pending_start = message
                elif kind == RESPONSE_BODY:
                    chunk = message.get("body", b"")
                    if type(chunk) is not bytes:  # a bytearray or memoryview: bytes pickle, views do not
                        message = {**message, "body": bytes(chunk)}
                    if pending_start is not None:
                        started, status = True, pending_start["status"]
                        yield [pending_start, message]
                        pending_start = None
                    else:
                        yield [message]
                    if not message.get("more_body", False):
                        finished = True  # background tasks (starlette BackgroundTask) may still run
                        return
        except (asyncio.CancelledError, GeneratorExit):
            outcome = CallOutcome.CANCELLED
            raise
        except BaseException as exc:
            failure = exc
            raise
        finally:
            if not finished and not task.done():
                disconnected.set()
                task.cancel()
            if done is not None:
                done(status, CallOutcome.OK if finished else outcome, failure)

    async def _run(self, scope: Scope, receive: Receive, send: Send, whole_body: bytes | None = None) -> None:
        if self._asgi is not None:
            await self._asgi(scope, receive, send)
            return
        if self._call is None:
            raise TypeError(f"Deployment '{self._deployment}' has no __call__ method to handle HTTP requests.")
        from starlette.requests import Request

        request = Request(scope, receive)
        if whole_body is not None:
            # Starlette's own cache of a body it has read: ``body()``, ``stream()``, ``json()`` and ``form()``
            # all start from it. Without it ``body()`` joins the body with the empty end of the stream, which
            # copies it: for a 1 MB body that was a tenth of the replica's work per request.
            request._body = whole_body
        args = (request,) if self._takes_request else ()
        result = await self._invoke(self._call, args, {})
        await to_response(result)(scope, receive, send)

    def _error_response(self, exc: BaseException | None, scope: Scope, debug: bool) -> list[Message]:
        request_id, route = current_request()
        if exc is None:
            text = "The application finished without sending a response."
        else:
            if self._on_user_error is not None:
                self._on_user_error(route, exc)
            logger.error("Request %s %s failed (request id %s):\n%s", scope.get("method"), scope.get("path"),
                         request_id, user_traceback(exc))
            # Ray Serve's body exactly (clients match on it); which error, and where, go in headers and the log.
            text = "Internal Server Error"
            if debug:
                text += "\n\n" + user_traceback(exc)
        headers = [(b"content-type", b"text/plain; charset=utf-8")]  # the proxy adds x-request-id to every answer
        if exc is not None:
            headers.append((b"x-serve-nb-error", f"{type(exc).__name__} raised in deployment '{self._deployment}'".encode()))
        return [
            {"type": RESPONSE_START, "status": 500, "headers": headers},
            {"type": RESPONSE_BODY, "body": text.encode(), "more_body": False},
        ]

    def websocket(self, scope: Scope, debug_errors: bool, items: ReceivedItems) -> AsyncIterator[list[Message]]:
        """Run the ingress app on a WebSocket; a deployment without one refuses it (``replica_websocket``)."""
        return serve_websocket(self._asgi, scope, items, self._deployment, debug_errors)
