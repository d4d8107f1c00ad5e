"""WebSockets through the proxy: one socket is one request to the ingress deployment, for its whole life.

The handshake goes to a replica like an HTTP request (route, router, ``max_ongoing_requests``, queueing,
``request_timeout_s`` until the app answers it); once the replica admits the request, the client's
messages follow it on the channel and the app's come back, each way under the channel's window
(``channel.duplex``). Nothing here holds more than one client message beyond that window: the client is
read only as the replica takes what it sent, so a client faster than the app is slowed by TCP, and an app
faster than its client waits in ``send``. uvicorn bounds a message (``ws_max_size``, 1009 past it) and
drops a client that stops answering pings.

Close codes pass through both ways: the app's ``websocket.close`` reaches the client as it is, and the
client's close reaches the app as ``websocket.disconnect`` with its code. Once the client has left the
app has ``DISCONNECT_GRACE_S`` to finish; then it is cancelled on the replica, so nothing outlives the
socket there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator

from serve_nb.data.http.asgi import Message, Receive, Scope, Send
from serve_nb.data.http.replica_websocket import ANSWERS, DENIAL_EXTENSION, INTERNAL_ERROR, http_answer
from serve_nb.data.request import Request
from serve_nb.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from serve_nb.http_options import HTTPOptions

logger = logging.getLogger(__name__)

#: After the client left, how long its app may take to finish (it got ``websocket.disconnect``, and its
#: sends fail) before the proxy cancels it on the replica.
DISCONNECT_GRACE_S = 5.0
#: What the ingress sees of uvicorn's scope (uvicorn's state and extensions stay here).
_SCOPE_KEYS = ("type", "asgi", "http_version", "scheme", "path", "raw_path", "query_string", "headers", "client",
               "server", "subprotocols")
#: The close code ASGI gives a disconnect that carried none.
NO_STATUS = 1005


def ingress_scope(scope: Scope, root_path: str) -> dict[str, Any]:
    """The scope the replica's app gets: the client's, its prefix as ``root_path``, and the denial-response
    extension when uvicorn offers it (the app may then answer the handshake with any HTTP response)."""
    inner = {k: scope[k] for k in _SCOPE_KEYS if k in scope}
    inner["root_path"] = root_path
    inner["headers"] = list(scope["headers"])
    if DENIAL_EXTENSION in scope.get("extensions", {}):
        inner["extensions"] = {DENIAL_EXTENSION: {}}
    return inner


async def refuse(send: Send) -> None:
    """Close before accepting: uvicorn answers the handshake with 403 (what an app without the route does)."""
    await send({"type": "websocket.close", "code": 1008, "reason": ""})


class ClientMessages:
    """The client's messages, as the channel's window asks for them (a ``BodySource``); the last is its
    ``websocket.disconnect``. One read of uvicorn is always pending (at most one message beyond the
    window), so the client leaving is seen at once (``gone``), even while the request still waits for a
    replica."""

    def __init__(self, receive: Receive) -> None:
        self.started = False
        self.gone = asyncio.Event()
        self._receive = receive
        self._next: asyncio.Future[Message] = asyncio.ensure_future(self._read())

    async def _read(self) -> Message:
        message = await self._receive()
        if message["type"] != "websocket.receive":
            self.gone.set()
        return message

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Message]:
        self.started = True
        while True:
            message = await self._next
            if message["type"] != "websocket.receive":
                yield {"type": "websocket.disconnect", "code": message.get("code", NO_STATUS),
                       "reason": message.get("reason") or ""}
                return
            self._next = asyncio.ensure_future(self._read())
            yield message

    def close(self) -> None:
        self._next.cancel()


class _Relay:
    """Hands the app's messages to uvicorn; remembers whether the handshake was answered."""

    def __init__(self, send: Send, scope: Scope) -> None:
        self._send = send
        self._scope = scope
        self.answered = asyncio.get_running_loop().create_future()
        self.client_left = False

    async def run(self, replies: AsyncIterator[list[Message]]) -> None:
        try:
            async with contextlib.aclosing(replies):
                async for batch in replies:
                    for message in batch:
                        if message["type"] in ANSWERS and not self.answered.done():
                            self.answered.set_result(None)
                        await self._forward(message)
        except asyncio.CancelledError:
            raise
        except (DeploymentUnavailableError, BackPressureError) as exc:
            await self._failed(503, f"Service Unavailable: {exc}")
        except ReplicaUnavailableError as exc:
            await self._failed(500, "Internal Server Error", f"replica unavailable: {exc}")
        except Exception as exc:  # noqa: BLE001
            await self._failed(500, "Internal Server Error", f"{type(exc).__name__}: {exc}")

    async def _forward(self, message: Message) -> None:
        if self.client_left:
            return  # drained, so the app's window keeps moving until it learns its client left
        try:
            await self._send(message)
        except OSError:  # uvicorn's ClientDisconnected: the client's disconnect is read next
            self.client_left = True

    async def _failed(self, status: int, text: str, why: str | None = None) -> None:
        """The request failed in the proxy, the router or on the way: an HTTP answer to the handshake if it
        was not answered yet, else a close with 1011."""
        if why is not None:
            logger.warning("serve_nb proxy: WebSocket %s failed: %s", self._scope.get("path"), why)
        if not self.answered.done():
            self.answered.set_result(None)
            for message in http_answer(self._scope, status, text):
                await self._forward(message)
        else:
            await self._forward({"type": "websocket.close", "code": INTERNAL_ERROR, "reason": ""})


async def forward_websocket(
    router: Any, scope: Scope, receive: Receive, send: Send, options: HTTPOptions, model_id: str = "",
    request_id: str = "", route: str = "",
) -> None:
    """Serve one WebSocket: ``scope`` is the ingress's (``ingress_scope``), ``router`` its deployment's;
    ``request_id`` names it in the replica's log lines, ``route`` is the prefix it matched."""
    if (await receive())["type"] != "websocket.connect":
        return  # the client left before the handshake reached the app
    client = ClientMessages(receive)
    relay = _Relay(send, scope)
    request = Request.websocket(scope, options.debug_errors, model_id, request_id, route)
    replies = router.stream(request, client, no_replica_timeout_s=options.no_replica_timeout_s)
    forward = asyncio.ensure_future(relay.run(replies))
    gone = asyncio.ensure_future(client.gone.wait())
    try:
        # Until the app answers the handshake the socket is an HTTP request: it times out as one.
        done, _ = await asyncio.wait({forward, gone, relay.answered}, timeout=options.request_timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        if not done:
            forward.cancel()
            await asyncio.gather(forward, return_exceptions=True)
            for message in http_answer(scope, 408, f"Request timed out after {options.request_timeout_s}s."):
                await send(message)
            return
        if forward in done or gone in done:
            return  # the app ended the socket, or its client left before it was answered
        await asyncio.wait({forward, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not forward.done():
            # The client left: its disconnect goes to the app, which has the grace period to finish.
            await asyncio.wait({forward}, timeout=DISCONNECT_GRACE_S)
    finally:
        if not forward.done():
            forward.cancel()  # closing the replies cancels the app on the replica and frees its slot
        await asyncio.gather(forward, return_exceptions=True)
        gone.cancel()
        client.close()
