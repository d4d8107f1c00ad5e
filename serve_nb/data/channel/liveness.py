"""Noticing a replica that went silent: connect timeout, TCP keepalive, and the caller's heartbeat.

A replica whose node froze (processes stopped, a kernel hang, a network partition) keeps its socket
open: nothing closes the connection, so without these the requests on it wait forever. TCP keepalive
notices a host that is gone or cut off, but not a stopped process (its kernel still answers), so the
caller also sends PING frames on a connection it has heard nothing on for a beat, which the replica
answers with PONG from its event loop. A connection silent for ``timeout_s`` is given up: its
requests fail (or are retried elsewhere, under the router's rules) and the router stops using it.

Nothing here runs per request: a frame received sets one flag, and one timer per connection ticks
``BEATS_PER_TIMEOUT`` times per timeout.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Callable, Mapping

#: Environment variable: seconds a caller waits without hearing from a replica before giving it up.
HEARTBEAT_TIMEOUT_ENV = "SERVE_NB_CHANNEL_HEARTBEAT_TIMEOUT_S"
#: Long enough that a replica whose event loop is busy for a moment (a large pickle) is not given up,
#: short enough that a frozen node's requests fail over within about five seconds (timeout plus a beat).
DEFAULT_HEARTBEAT_TIMEOUT_S = 4.0
#: Environment variable: seconds a caller waits for a TCP or Unix connection to a replica to open.
CONNECT_TIMEOUT_ENV = "SERVE_NB_CHANNEL_CONNECT_TIMEOUT_S"
DEFAULT_CONNECT_TIMEOUT_S = 5.0
#: Ticks per timeout: silence is measured in beats, so it is noticed between ``timeout`` and
#: ``timeout * (1 + 1/BEATS_PER_TIMEOUT)`` after the last frame.
BEATS_PER_TIMEOUT = 4
#: TCP keepalive: first probe after this many idle seconds, then one every interval, given up after
#: the count (a dead or cut-off host is noticed in about 11 s even on a connection nobody uses).
KEEPALIVE_IDLE_S = 5
KEEPALIVE_INTERVAL_S = 2
KEEPALIVE_COUNT = 3


def seconds_from_env(name: str, default: float, environ: Mapping[str, str] = os.environ) -> float:
    """A positive number of seconds from the environment variable ``name`` (``default`` if unset)."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name}={raw!r} is not a positive number of seconds; set it to e.g. {default:g} "
                         "or unset it for the default.")
    return value


def heartbeat_timeout_s(environ: Mapping[str, str] = os.environ) -> float:
    return seconds_from_env(HEARTBEAT_TIMEOUT_ENV, DEFAULT_HEARTBEAT_TIMEOUT_S, environ)


def connect_timeout_s(environ: Mapping[str, str] = os.environ) -> float:
    return seconds_from_env(CONNECT_TIMEOUT_ENV, DEFAULT_CONNECT_TIMEOUT_S, environ)


def enable_keepalive(sock: socket.socket) -> None:
    """Turn on TCP keepalive with short timers where the platform lets us set them (Linux, macOS)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S), ("TCP_KEEPALIVE", KEEPALIVE_IDLE_S),
                          ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S), ("TCP_KEEPCNT", KEEPALIVE_COUNT)):
        number = getattr(socket, option, None)
        if number is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, number, value)
            except OSError:
                pass  # not settable here: the system's keepalive timers apply


class Heartbeat:
    """Ticks on the loop while a connection is open: sends ``ping`` after a silent beat, and calls
    ``silent`` once nothing was heard for ``timeout_s``. The connection sets ``heard`` on each frame."""

    __slots__ = ("heard", "_silence", "_beat", "_timeout", "_ping", "_silent", "_timer", "_loop")

    def __init__(self, timeout_s: float, ping: Callable[[], None], silent: Callable[[float], None]) -> None:
        self.heard = True
        self._silence = 0.0
        self._timeout = timeout_s
        self._beat = timeout_s / BEATS_PER_TIMEOUT
        self._ping = ping
        self._silent = silent
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(self._beat, self._tick)

    def _tick(self) -> None:
        if self.heard:
            self.heard = False
            self._silence = 0.0
        else:
            self._silence += self._beat
            if self._silence >= self._timeout - 1e-9:
                self._timer = None
                self._silent(self._silence)
                return
            self._ping()
        self._timer = self._loop.call_later(self._beat, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
