"""Noticing a replica that went silent: connect timeout, TCP keepalive, and the caller's heartbeat.

A replica whose node froze (processes stopped, a kernel hang, a network partition) keeps its socket
open: nothing closes the connection, so without these the requests on it wait forever. TCP keepalive
notices a host that is gone or cut off, but not a stopped process (its kernel still answers), so the
caller also sends PING frames on a connection it has heard nothing on for a beat, which the replica
answers with PONG from its event loop. A connection silent for ``timeout_s`` is given up: its
requests fail (or are retried elsewhere, under the router's rules) and the router stops using it.

User code that blocks a replica's event loop (a long synchronous call in an ``async def``) silences it too,
though its process is well. So a caller that can ask by another path (``vouch``: Ray's call to the replica's
liveness thread) does so before giving up, and keeps the connection while the answer is yes; a frozen node
cannot answer, and is given up ``VOUCH_TIMEOUT_S`` later than without the question.

Nothing here runs per request: a frame received sets one flag, and one timer per connection ticks
``BEATS_PER_TIMEOUT`` times per timeout.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Awaitable, Callable, Mapping

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
#: How long a vouch (is the silent replica's process alive?) may take: a live one answers in milliseconds.
VOUCH_TIMEOUT_S = 1.0

#: Asks, by a path other than the silent connection, whether the replica's process is alive.
Vouch = Callable[[], Awaitable[bool]]


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
    ``silent`` once nothing was heard for ``timeout_s`` (and ``vouch``, if given, did not say the process
    lives). The connection sets ``heard`` on each frame."""

    __slots__ = ("heard", "_silence", "_beat", "_timeout", "_ping", "_silent", "_vouch", "_vouching", "_timer",
                 "_loop")

    def __init__(self, timeout_s: float, ping: Callable[[], None], silent: Callable[[float], None],
                 vouch: Vouch | None = None) -> None:
        self.heard = True
        self._silence = 0.0
        self._timeout = timeout_s
        self._beat = timeout_s / BEATS_PER_TIMEOUT
        self._ping = ping
        self._silent = silent
        self._vouch = vouch
        self._vouching: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(self._beat, self._tick)

    def _tick(self) -> None:
        if self.heard:
            self.heard = False
            self._silence = 0.0
        else:
            self._silence += self._beat
            if self._silence >= self._timeout - 1e-9:
                if self._vouch is None:
                    self._give_up()
                    return
                if self._vouching is None:
                    self._vouching = self._loop.create_task(self._ask())
            self._ping()
        self._timer = self._loop.call_later(self._beat, self._tick)

    async def _ask(self) -> None:
        try:
            alive = await asyncio.wait_for(self._vouch(), VOUCH_TIMEOUT_S)  # type: ignore[misc]  # set when asked
        except Exception:  # no answer in time, or the replica's actor is gone
            alive = False
        self._vouching = None
        if self._timer is None:
            return  # stopped meanwhile
        if alive:
            self.heard = True  # its process lives (its loop is busy): keep waiting, and ask again if it stays silent
        else:
            self._give_up()

    def _give_up(self) -> None:
        self.stop()
        self._silent(self._silence)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._vouching is not None:
            self._vouching.cancel()
            self._vouching = None
