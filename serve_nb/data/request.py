"""One request as it travels from caller to replica: built once by the handle or the proxy.

The router and the channel pass it on unchanged; only the replica looks inside. Its kind says
what comes back, so whether a request streams is decided in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any


class RequestKind(IntEnum):
    """What the caller expects back."""

    CALL = 0  # a handle call: one value
    STREAM = 1  # a handle call to a generator method (``stream=True``): its items
    HTTP = 2  # an HTTP request from the proxy: the ingress's ASGI messages, in batches


_KINDS = tuple(RequestKind)  # index == value: decoding without an Enum lookup per request

#: The wire form: plain values only, because pickling a dataclass costs several times a tuple's.
Wire = tuple[int, str, tuple, dict]


@dataclass(frozen=True, slots=True)
class Request:
    """``method(*args, **kwargs)`` on a replica. For HTTP, ``args`` is ``(scope, body, debug_errors)``."""

    kind: RequestKind
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    @property
    def streams(self) -> bool:
        """The reply is a sequence of items (ended by the channel's END), not one value."""
        return self.kind is not RequestKind.CALL

    @classmethod
    def http(cls, scope: dict[str, Any], body: bytes | bytearray, debug_errors: bool) -> "Request":
        """An HTTP request for an ingress deployment; the method is the adapter's to choose. The body may be
        the proxy's own bytearray (held once, not copied); the replica adapter hands the app bytes."""
        return cls(RequestKind.HTTP, "", (scope, body, debug_errors), {})

    def to_wire(self) -> Wire:
        return (self.kind.value, self.method, self.args, self.kwargs)

    @classmethod
    def from_wire(cls, wire: Wire) -> "Request":
        kind, method, args, kwargs = wire
        return cls(_KINDS[kind], method, args, kwargs)
