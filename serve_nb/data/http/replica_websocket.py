"""A WebSocket inside a replica: run the ingress's ASGI app on the socket the proxy forwarded.

The client's messages arrive on the channel (``ReceivedItems``); the app's go back as the reply's items,
in batches. The app sees what it would see under uvicorn: ``websocket.connect`` first, then the client's
messages, then ``websocket.disconnect`` with the client's close code; ``send`` once the client has left
raises ``ClientDisconnected``, an OSError, as uvicorn's does (Starlette turns it into
``WebSocketDisconnect``). Whatever the app does, it holds one request slot until it returns or the
proxy cancels it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

from serve_nb.common.serialization import user_traceback
from serve_nb.data.channel.duplex import EndOfItems, ReceivedItems
from serve_nb.data.http.asgi import ASGIApp, Message, Scope

logger = logging.getLogger("serve_nb.replica")

#: Messages the app may have handed to ``send`` that have not yet gone out; past it ``send`` waits, and
#: the channel's window holds back the rest: an app faster than its client is slowed to the client's pace.
SEND_AHEAD = 4
#: RFC 6455 close codes used here: the connection dropped without a close frame; an internal error.
ABNORMAL_CLOSURE = 1006
INTERNAL_ERROR = 1011
#: What the socket's handshake may be answered with (before it, nothing else may be sent).
ANSWERS = frozenset({"websocket.accept", "websocket.close", "websocket.http.response.start"})
#: What the proxy may hand on from the client.
_FROM_CLIENT = frozenset({"websocket.receive", "websocket.disconnect"})
#: The ASGI extension that lets an app answer the handshake with an HTTP response.
DENIAL_EXTENSION = "websocket.http.response"

_DONE = object()


class ClientDisconnected(OSError):
    """``send`` after the client left (uvicorn raises an OSError of the same name there)."""


def _gone() -> Message:
    return {"type": "websocket.disconnect", "code": ABNORMAL_CLOSURE, "reason": ""}


def http_answer(scope: Scope, status: int, text: str) -> list[Message]:
    """The handshake answered with an HTTP response (ASGI's denial-response extension), or, where the
    server does not offer it, closed before accepting (the server then answers 403)."""
    if DENIAL_EXTENSION not in scope.get("extensions", {}):
        return [{"type": "websocket.close", "code": 1008, "reason": ""}]
    return [
        {"type": "websocket.http.response.start", "status": status,
         "headers": [(b"content-type", b"text/plain; charset=utf-8")]},
        {"type": "websocket.http.response.body", "body": text.encode(), "more_body": False},
    ]


def refusal(deployment: str) -> list[Message]:
    """A deployment without an ASGI app (a plain ``__call__``) cannot hold a WebSocket: closing before
    accepting makes the proxy's server answer the handshake with 403."""
    logger.warning("Deployment '%s' has no ASGI app (@serve.ingress): its WebSocket was refused.", deployment)
    return [{"type": "websocket.close", "code": 1008,
             "reason": f"Deployment '{deployment}' does not serve WebSockets: use @serve.ingress."}]


class _Socket:
    """The app's view of the socket: ``receive`` and ``send``, and what they have seen."""

    def __init__(self, items: ReceivedItems) -> None:
        self.items = items
        self.out: asyncio.Queue[object] = asyncio.Queue()  # unbounded: ``ahead`` bounds the app's messages
        self.ahead = asyncio.Semaphore(SEND_AHEAD)
        self.connect_sent = False
        self.disconnect: Message | None = None
        self.answered = False
        self.closed = False

    async def receive(self) -> Message:
        if not self.connect_sent:
            self.connect_sent = True
            return {"type": "websocket.connect"}
        if self.disconnect is not None:
            return self.disconnect
        try:
            message = await self.items.take()
        except EndOfItems:
            message = _gone()  # the request ended without the client's close: the connection dropped
        if type(message) is not dict or message.get("type") not in _FROM_CLIENT:
            message = _gone()
        if message["type"] == "websocket.disconnect":
            self.disconnect = message
        return message

    async def send(self, message: Message) -> None:
        if self.items.ended:  # the client's messages are over: it has left (its disconnect may be unread)
            raise ClientDisconnected("the WebSocket's client disconnected")
        kind = message["type"]
        if kind in ANSWERS:
            self.answered = True
        if kind == "websocket.close" or (kind == "websocket.http.response.body" and not message.get("more_body")):
            self.closed = True
        for key in ("bytes", "body"):
            data = message.get(key)
            if data is not None and type(data) is not bytes:  # a bytearray or memoryview: bytes pickle, views do not
                message = {**message, key: bytes(data)}
        await self.ahead.acquire()
        self.out.put_nowait(message)


async def serve_websocket(
    app: ASGIApp | None, scope: Scope, items: ReceivedItems, deployment: str, debug_errors: bool = False
) -> AsyncIterator[list[Message]]:
    """Run ``app`` on the socket; yield its messages as it sends them (those sent meanwhile together).

    If the app fails before answering the handshake the client gets a 500, as from uvicorn; after, a
    close with 1011. Closing this generator (the proxy cancelled: its client is long gone, or the proxy
    itself is) cancels the app."""
    if app is None:
        yield refusal(deployment)
        return
    socket = _Socket(items)
    task = asyncio.get_running_loop().create_task(app(scope, socket.receive, socket.send))
    task.add_done_callback(lambda _: socket.out.put_nowait(_DONE))
    finished = False
    try:
        while True:
            batch: list[Message] = []
            message = await socket.out.get()
            while message is not _DONE:
                socket.ahead.release()
                batch.append(message)  # type: ignore[arg-type]
                if socket.out.empty():
                    break
                message = socket.out.get_nowait()
            if batch:
                yield batch
            if message is _DONE:
                finished = True
                ending = _ending(task, socket, scope, deployment, debug_errors)
                if ending:
                    yield ending
                return
    finally:
        if not finished and not task.done():
            task.cancel()


def _ending(
    task: "asyncio.Task[None]", socket: _Socket, scope: Scope, deployment: str, debug_errors: bool
) -> list[Message]:
    """What the client gets after the app returned or raised, when the app left it without an answer."""
    exc = None if task.cancelled() else task.exception()
    where = f"WebSocket {scope.get('path')} of deployment '{deployment}'"
    if exc is not None:
        if socket.disconnect is not None or socket.items.ended:
            logger.debug("%s raised after its client left:\n%s", where, user_traceback(exc))
        else:
            logger.error("%s failed:\n%s", where, user_traceback(exc))
    if not socket.answered:
        if exc is None:
            logger.error("%s returned without accepting or closing the socket.", where)
        text = "Internal Server Error" + (f"\n\n{user_traceback(exc)}" if debug_errors and exc is not None else "")
        return http_answer(scope, 500, text)
    if exc is not None and not socket.closed and socket.disconnect is None and not socket.items.ended:
        return [{"type": "websocket.close", "code": INTERNAL_ERROR, "reason": ""}]
    return []
