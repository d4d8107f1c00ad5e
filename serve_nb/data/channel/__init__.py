"""The data plane: a persistent, multiplexed socket between a caller (handle or proxy) and a replica.

One Ray actor call costs about a millisecond; a frame on an open socket costs tens of
microseconds. Ray still places, starts and stops replicas; requests travel here.

``frames`` is the wire format, ``server`` the replica's end, ``client`` the caller's end, ``auth``
the handshake that proves both ends hold the replica's key, ``tls`` Ray's TLS settings applied here.
Guarantees:
- REJECT means the replica did not run the request (full or draining): the caller may retry.
- GOODBYE is sent once every accepted request was answered; anything the caller sent after it
  was never run, so a caller may retry it elsewhere. Only a connection lost without GOODBYE
  leaves requests in doubt (``ConnectionLost``): they are sent again only if declared idempotent.
- Each end proves it holds the replica's key (HMAC over fresh nonces from both; the key never
  travels) before the other reads anything that matters: the replica reads no request, the caller
  sends none and unpickles no reply, until then.
- Before it is authenticated a connection can make either end hold at most a small handshake frame,
  for a few seconds; after, a frame is at most ``MAX_FRAME_BYTES`` (both ends check, the sender first).
- TCP connections use TLS, mutual and against Ray's CA, whenever Ray's own TLS is on (``RAY_USE_TLS``).
- The replica listens on loopback while the whole cluster is on one machine, else on the node's IP
  (``server.listen_host``); same-node callers use a Unix socket in a 0700 directory (``sockdir``).
- A replica that goes silent with the connection open (its node frozen or cut off) is given up by the
  caller within its heartbeat timeout (``liveness``): its requests fail as ``ConnectionLost``.
"""

from serve_nb.data.channel.client import ChannelClient
from serve_nb.data.channel.frames import (
    Address, ConnectionLost, ForObjectStore, FrameTooLargeError, Kind, NotSent, Rejected,
)
from serve_nb.data.channel.server import ChannelServer, RequestHandler

__all__ = [
    "Address",
    "ChannelClient",
    "ChannelServer",
    "ConnectionLost",
    "ForObjectStore",
    "FrameTooLargeError",
    "Kind",
    "NotSent",
    "Rejected",
    "RequestHandler",
]
