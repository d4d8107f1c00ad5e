"""Who may talk on a channel: a per-replica key, proven by both ends without ever being sent.

Each replica makes its own secret when it starts (``new_secret``); the controller learns it from the
replica over Ray and hands it to routers on the long-poll, so it is never in an actor's creation
arguments or in the controller's checkpoint (both are kept in Ray's GCS). When Ray's token
authentication is on, the key both ends use is derived from that secret *and* Ray's token
(``channel_key``), so the secret alone, wherever it might leak, lets no one in.

The handshake, once per connection (one round trip; every request after it costs nothing more)::

    caller  -> HELLO(client nonce)
    replica -> CHALLENGE(server nonce, proof(SERVER))
    caller  -> PROOF(proof(CLIENT)), then its CALLs at once

The caller checks the replica's proof before it sends a request or reads a reply (replies are
unpickled, so a process squatting on a dead replica's port must not be believed); the replica checks
the caller's before it reads a request. Each proof covers both nonces, fresh per connection, so none
can be replayed, and the two roles are labelled apart, so one side's proof is never the other's.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from enum import Enum

#: Bytes of a replica's secret, of each nonce and of each proof (HMAC-SHA256).
SECRET_BYTES = 32
NONCE_BYTES = 32
PROOF_BYTES = hashlib.sha256().digest_size
#: What a CHALLENGE carries: the replica's nonce, then its proof.
CHALLENGE_BYTES = NONCE_BYTES + PROOF_BYTES

_KEY_INFO = b"serve_nb channel key v1"


class Role(Enum):
    """Which end a proof speaks for; part of what is signed, so a proof of one is no proof of the other."""

    CLIENT = b"serve_nb channel v1 client"
    SERVER = b"serve_nb channel v1 server"


def new_secret() -> bytes:
    """A replica's secret, made by the replica itself."""
    return secrets.token_bytes(SECRET_BYTES)


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def channel_key(secret: bytes, ray_token: bytes | None = None) -> bytes:
    """The key both ends prove they hold: HKDF-SHA256 (RFC 5869) with the replica's secret as salt and
    Ray's auth token, when Ray uses one, as input keying material; the secret itself otherwise.

    With the token mixed in, only a process holding Ray's token (one that could submit Ray tasks
    anyway) can compute the key, even if the secret leaked some other way than over Ray."""
    if not ray_token:
        return secret
    prk = hmac.new(secret, ray_token, hashlib.sha256).digest()
    return hmac.new(prk, _KEY_INFO + b"\x01", hashlib.sha256).digest()


def proof(key: bytes, role: Role, client_nonce: bytes, server_nonce: bytes) -> bytes:
    """What ``role`` sends to show it holds ``key`` on the connection these two nonces name."""
    return hmac.new(key, role.value + client_nonce + server_nonce, hashlib.sha256).digest()


def verify(key: bytes, role: Role, client_nonce: bytes, server_nonce: bytes, claimed: bytes) -> bool:
    """True if ``claimed`` is ``role``'s proof for this connection (compared in constant time)."""
    return hmac.compare_digest(claimed, proof(key, role, client_nonce, server_nonce))
