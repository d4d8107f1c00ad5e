"""HTTP options: where the per-node proxies listen and what they accept from clients.

Re-exported by ``serve_nb.config`` (every import of ``serve_nb.config.HTTPOptions`` keeps working).
This module imports nothing from ``serve_nb``, so ``config`` can re-export it without an import cycle.
The limits protect the proxy from hostile or broken clients; each has a default a user would expect
from a web server, and ``None`` turns a limit off.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping

MAX_PORT = 65535
#: Large enough for images, audio and batched tensors sent as one request; a larger body is 413.
DEFAULT_MAX_BODY_BYTES = 100 * 2**20
#: Request line plus all header lines. Big cookies and JWTs fit; nginx allows 32 KiB, Node 16 KiB.
DEFAULT_MAX_HEADER_BYTES = 64 * 2**10
#: Apache's LimitRequestFields: real clients and proxy chains stay far below it.
DEFAULT_MAX_HEADER_COUNT = 100
#: A real client sends its headers in milliseconds; a slowloris client trickles them forever.
DEFAULT_HEADER_TIMEOUT_S = 10.0
#: Ray Serve's HTTPOptions default (idle keep-alive connections close after it).
DEFAULT_KEEP_ALIVE_TIMEOUT_S = 5.0
#: Open connections plus running requests per proxy; beyond it a request gets a fast 503 instead of
#: the process running out of file descriptors and stalling every client.
DEFAULT_MAX_CONNECTIONS = 10_000
#: A request to a deployment with no running replica waits this long for one, then gets 503: long
#: enough for a replica to come back after a crash or to cold-start a small model, short enough that
#: a client is never left hanging on a constructor that does not return.
DEFAULT_NO_REPLICA_TIMEOUT_S = 30.0
#: The methods ``retry_safe_methods`` sends again (RFC 9110's safe methods, bar TRACE).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ProxyLocation(str, Enum):
    """Where the HTTP proxies run. Members equal their strings, so ``location="HeadOnly"`` and
    ``location=ProxyLocation.HeadOnly`` mean the same (member names as in Ray Serve)."""

    EveryNode = "EveryNode"
    HeadOnly = "HeadOnly"
    NoServer = "NoServer"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def from_user(cls, value: "ProxyLocation | str") -> "ProxyLocation":
        """The member for ``value``; a ValueError naming the valid locations otherwise."""
        try:
            return cls(value)
        except ValueError:
            valid = ", ".join(repr(member.value) for member in cls)
            raise ValueError(f"http_options location must be one of {valid}, got {value!r}.") from None


def _int_at_least(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"http_options {name} must be an integer >= {minimum}, got {value!r}.")


def _positive_seconds(name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"http_options {name} must be a number > 0, got {value!r}.")


@dataclass(frozen=True)
class HTTPOptions:
    """Where the per-node HTTP proxies listen, and how they treat requests."""

    host: str = "127.0.0.1"
    port: int = 8000
    root_path: str = ""
    request_timeout_s: float | None = None
    keep_alive_timeout_s: float = DEFAULT_KEEP_ALIVE_TIMEOUT_S
    location: ProxyLocation = ProxyLocation.EveryNode
    start_timeout_s: float = 30.0
    debug_errors: bool = False
    #: Set SO_REUSEPORT on the proxy's socket where the platform has it (Linux, macOS; ignored elsewhere),
    #: as Ray Serve does: several Ray nodes on one machine each run a proxy on the same port, and the kernel
    #: spreads connections over them. On by default; the cost is that any other process of the same user
    #: that also sets it (a proxy of another Serve instance) could share the port instead of failing to bind.
    reuse_port: bool = True
    #: A larger body is answered 413 (from Content-Length at once; chunked bodies while reading).
    max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES
    #: Request line plus headers; more is answered 431.
    max_header_bytes: int | None = DEFAULT_MAX_HEADER_BYTES
    #: More header lines are answered 431.
    max_header_count: int | None = DEFAULT_MAX_HEADER_COUNT
    #: A client that has not sent all its headers this long after starting a request is answered 408 and closed.
    header_timeout_s: float | None = DEFAULT_HEADER_TIMEOUT_S
    #: uvicorn's ``limit_concurrency``: beyond it requests are answered 503.
    max_connections: int | None = DEFAULT_MAX_CONNECTIONS
    #: How long a request waits for a deployment that has no running replica (starting, or replaced
    #: after a crash) before 503 with the reason; None waits as long as ``request_timeout_s``.
    no_replica_timeout_s: float | None = DEFAULT_NO_REPLICA_TIMEOUT_S
    #: Send GET, HEAD and OPTIONS requests again, to another replica, if theirs dies before the response
    #: starts (up to 3 times). Off by default: only turn it on if those handlers are safe to run twice.
    retry_safe_methods: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"http_options host must be a non-empty string, got {self.host!r}.")
        _int_at_least("port", self.port, 0)
        if self.port > MAX_PORT:
            raise ValueError(f"http_options port must be <= {MAX_PORT}, got {self.port}.")
        _positive_seconds("keep_alive_timeout_s", self.keep_alive_timeout_s)
        if not isinstance(self.retry_safe_methods, bool):
            raise ValueError(f"http_options retry_safe_methods must be True or False, got {self.retry_safe_methods!r}.")
        for name in ("request_timeout_s", "header_timeout_s", "no_replica_timeout_s"):
            if getattr(self, name) is not None:
                _positive_seconds(name, getattr(self, name))
        for name in ("max_body_bytes", "max_header_bytes", "max_header_count", "max_connections"):
            if getattr(self, name) is not None:
                _int_at_least(name, getattr(self, name), 1)
        # Frozen: the string a user passed becomes its member here, so every reader sees the enum.
        object.__setattr__(self, "location", ProxyLocation.from_user(self.location))

    @classmethod
    def from_user(cls, value: "HTTPOptions | Mapping[str, Any] | None") -> "HTTPOptions":
        if value is None:
            return cls()
        if isinstance(value, HTTPOptions):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(f"http_options must be a dict or HTTPOptions, got {type(value).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(
                f"Unknown http_options key(s): {', '.join(unknown)}. Valid keys: {', '.join(sorted(known))}."
            )
        return cls(**value)
