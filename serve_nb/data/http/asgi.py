"""The ASGI types, defined once (as in starlette's ``types.py``) for the proxy and the replica adapter.

ASGI messages cross the channel unchanged: the replica sends the app's ``http.response.start`` and
``http.response.body`` dicts, and the proxy hands them to uvicorn as they are.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, MutableMapping

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

RESPONSE_START = "http.response.start"
RESPONSE_BODY = "http.response.body"

