"""The data plane: a persistent, multiplexed socket between a caller (handle or proxy) and a replica.

One Ray actor call costs about a millisecond; a frame on an open socket costs tens of
microseconds. Ray still places, starts and stops replicas; requests travel here.

``frames`` is the wire format, ``server`` the replica's end, ``client`` the caller's end.
Guarantees:
- REJECT means the replica did not run the request (full or draining): the caller may retry.
- GOODBYE is sent once every accepted request was answered; anything the caller sent after it
  was never run, so a caller may retry it elsewhere. Only a connection lost without GOODBYE
  leaves requests in doubt (``ConnectionLost``): they are sent again only if declared idempotent.
- Before its token is checked a connection can make the replica hold at most a small HELLO, for a
  few seconds; after, a frame is at most ``MAX_FRAME_BYTES`` (both ends check, the sender first).
- The replica listens on loopback while the whole cluster is on one machine, else on the node's IP
  (``server.listen_host``); same-node callers use a Unix socket in a 0700 directory (``sockdir``).
"""

from serve_nb.data.channel.client import ChannelClient
from serve_nb.data.channel.frames import Address, ConnectionLost, FrameTooLargeError, Kind, NotSent, Rejected
from serve_nb.data.channel.server import ChannelServer, RequestHandler

__all__ = [
    "Address",
    "ChannelClient",
    "ChannelServer",
    "ConnectionLost",
    "FrameTooLargeError",
    "Kind",
    "NotSent",
    "Rejected",
    "RequestHandler",
]
