"""One request as it travels from caller to replica: built once by the handle or the proxy.

The router and the channel pass it on unchanged; only the replica looks inside. Its kind says
what comes back, so whether a request streams is decided in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, AsyncIterator, Protocol

if TYPE_CHECKING:
    from serve_nb.data.channel.buffers import Pieces


class RequestKind(IntEnum):
    """What the caller expects back."""

    CALL = 0  # a handle call: one value
    STREAM = 1  # a handle call to a generator method (``stream=True``): its items
    HTTP = 2  # an HTTP request from the proxy: the ingress's ASGI messages, in batches
    WEBSOCKET = 3  # a WebSocket from the proxy: the client's messages follow it, the app's come back in batches


_KINDS = tuple(RequestKind)  # index == value: decoding without an Enum lookup per request

#: The wire form: plain values only, because pickling a dataclass costs several times a tuple's.
Wire = tuple[int, str, tuple, dict, str, str, str]


class BodySource(Protocol):
    """What a request streams after it, once the replica admitted it: the rest of a large HTTP body (its
    chunks, as bytes) or a WebSocket client's ASGI messages (dicts), in order, once. ``started`` turns True
    on the first read: from then on the request cannot be sent again."""

    started: bool

    def __aiter__(self) -> AsyncIterator[Any]: ...


@dataclass(frozen=True, slots=True)
class StashedResult:
    """The reply to a call, when too large for the channel: the replica keeps the value under ``token``
    until the caller takes it through Ray's object store (``serve_nb.data.objects``)."""

    token: str


@dataclass(frozen=True, slots=True)
class Request:
    """``method(*args, **kwargs)`` on a replica. For HTTP, ``args`` is ``(scope, body, debug_errors, rest)``:
    ``body`` is the whole body, or its first part when more follows; then ``rest`` is True on the wire
    (the body's remainder follows the request on the channel) and, in the replica, the chunks' iterator.

    ``model_id`` is the multiplexed model the caller asked for ("" for none): routers prefer replicas that
    hold it, and the replica shows it to user code as ``serve.get_multiplexed_model_id()``. ``request_id``
    names the request in every log line it causes, in each deployment it passes through; ``route`` is the
    route prefix of the HTTP request it serves ("" for none), a label of Ray Serve's metrics."""

    kind: RequestKind
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    model_id: str = ""
    request_id: str = ""
    route: str = ""

    @property
    def streams(self) -> bool:
        """The reply is a sequence of items (ended by the channel's END), not one value."""
        return self.kind is not RequestKind.CALL

    @property
    def body_follows(self) -> bool:
        """Something is streamed after the request: an HTTP body's remainder, or a WebSocket's messages."""
        return (self.kind is RequestKind.HTTP or self.kind is RequestKind.WEBSOCKET) and self.args[-1] is True

    @property
    def duplex(self) -> bool:
        """Items flow both ways for as long as the request lasts, each way under a window (a WebSocket)."""
        return self.kind is RequestKind.WEBSOCKET

    @classmethod
    def http(
        cls, scope: dict[str, Any], body: "bytes | Pieces", debug_errors: bool, more: bool = False, model_id: str = "",
        request_id: str = "", route: str = "",
    ) -> "Request":
        """An HTTP request for an ingress deployment; the method is the adapter's to choose. A large body is
        the ``Pieces`` the proxy read, which the channel sends without copying them into the request; the
        replica adapter hands the app each piece. ``more``: ``body`` is only the first part, the rest is
        streamed after the request."""
        return cls(RequestKind.HTTP, "", (scope, body, debug_errors, more), {}, model_id, request_id, route)

    @classmethod
    def websocket(cls, scope: dict[str, Any], debug_errors: bool, model_id: str = "", request_id: str = "",
                  route: str = "") -> "Request":
        """A WebSocket for an ingress deployment: ``args`` is ``(scope, debug_errors, rest)``. ``rest`` is True
        on the wire (the client's messages follow the request on the channel) and, in the replica, the
        receiving end of those messages."""
        return cls(RequestKind.WEBSOCKET, "", (scope, debug_errors, True), {}, model_id, request_id, route)

    def with_rest(self, rest: Any) -> "Request":
        """This request as the replica runs it: what the caller streams after it (an HTTP body's remainder,
        a WebSocket's messages) is ``rest``, always the last argument."""
        return self.with_args(self.args[:-1] + (rest,), self.kwargs)

    def with_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> "Request":
        """The same request with other arguments (responses resolved to their values, a body's rest)."""
        return Request(self.kind, self.method, args, kwargs, self.model_id, self.request_id, self.route)

    def to_wire(self) -> Wire:
        return (self.kind.value, self.method, self.args, self.kwargs, self.model_id, self.request_id, self.route)

    @classmethod
    def from_wire(cls, wire: Wire) -> "Request":
        kind, method, args, kwargs, model_id, request_id, route = wire
        return cls(_KINDS[kind], method, args, kwargs, model_id, request_id, route)
