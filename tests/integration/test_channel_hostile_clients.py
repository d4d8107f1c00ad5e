"""A real replica's channel against a hostile local client: without the key nothing but small handshake
frames is read, idle handshakes are dropped, a wrong proof is DENIED, and the replica keeps serving;
a client holding the replica's key (its secret from the feed, with Ray's token) is served."""

from __future__ import annotations

import ipaddress
import os
import socket
import stat

import psutil
import pytest

from serve_nb import ray_private
from serve_nb.common.serialization import dumps, loads
from serve_nb.data.channel import Kind, auth
from serve_nb.data.channel.frames import HEADER
from serve_nb.data.channel.server import HANDSHAKE_TIMEOUT_S
from serve_nb.data.request import Request, RequestKind

APP = "hostile"
ANNOUNCED = 400 * 1024 * 1024  # what the attacker's frame header claims
SENT = 64 * 1024 * 1024  # what it tries to push behind it
#: Growth of the replica's RSS still allowed: far below what was sent (a few socket reads at most).
RSS_SLACK = 32 * 1024 * 1024


@pytest.fixture
def replica(serve_instance):
    serve = serve_instance

    @serve.deployment
    class Echo:
        def __call__(self, x):
            return x

    handle = serve.run(Echo.bind(), name=APP, route_prefix=None)
    assert handle.remote(1).result() == 1
    (info,) = serve.feed.get(serve.feed.replicas(APP, "Echo")).replicas
    yield info, handle


def connect(info) -> socket.socket:
    sock = socket.create_connection((info.host, info.port), timeout=HANDSHAKE_TIMEOUT_S + 10)
    return sock


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while len(data) < HEADER.size:
        chunk = sock.recv(HEADER.size - len(data))
        assert chunk, "closed before a frame arrived"
        data += chunk
    length, kind, _ = HEADER.unpack(data)
    payload = b""
    while len(payload) < length:
        payload += sock.recv(length - len(payload))
    return kind, payload


def frame(kind: int, rid: int = 0, payload: bytes = b"") -> bytes:
    return HEADER.pack(len(payload), kind, rid) + payload


def challenge(sock: socket.socket) -> tuple[bytes, bytes, bytes]:
    """Say HELLO and read the CHALLENGE: (client nonce, server nonce, server proof)."""
    client_nonce = auth.new_nonce()
    sock.sendall(frame(Kind.HELLO, 0, client_nonce))
    kind, payload = read_frame(sock)
    assert kind == Kind.CHALLENGE
    return client_nonce, payload[: auth.NONCE_BYTES], payload[auth.NONCE_BYTES :]


def closed_by_replica(sock: socket.socket) -> bool:
    """Reads until the replica closes the connection (bounded by the socket's timeout)."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def test_the_replica_listens_on_loopback_and_a_private_unix_socket_on_one_node(replica):
    info, _ = replica
    assert ipaddress.ip_address(info.host).is_loopback
    assert info.uds_path is not None
    assert stat.S_IMODE(os.stat(os.path.dirname(info.uds_path)).st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(info.uds_path).st_mode) == 0o600
    assert "/session_" in info.uds_path  # removed with Ray's session directory


def test_an_oversized_frame_before_hello_is_refused_without_buffering_it(replica):
    info, handle = replica
    process = psutil.Process(info.pid)
    before = process.memory_info().rss
    with connect(info) as sock:
        sock.sendall(HEADER.pack(ANNOUNCED, Kind.CALL, 1))
        sent = 0
        block = b"\0" * (1024 * 1024)
        try:
            while sent < SENT:
                sock.sendall(block)
                sent += len(block)
        except OSError:
            pass  # the replica closed the connection: the point
        assert read_frame(sock)[0] == Kind.DENIED
        assert closed_by_replica(sock)
    assert process.memory_info().rss - before < RSS_SLACK
    assert handle.remote(2).result() == 2


def test_an_idle_handshake_is_closed_after_the_deadline(replica):
    info, handle = replica
    with connect(info) as sock:
        assert closed_by_replica(sock)  # nothing sent: the replica ends it
    assert handle.remote(3).result() == 3


def test_a_wrong_proof_is_denied_and_callers_with_the_key_are_served(replica):
    info, handle = replica
    with connect(info) as sock:
        challenge(sock)
        sock.sendall(frame(Kind.PROOF, 0, b"x" * auth.PROOF_BYTES))
        kind, payload = read_frame(sock)
        assert kind == Kind.DENIED and b"authentication failed" in payload
        assert closed_by_replica(sock)
    assert [handle.remote(i).result() for i in range(5)] == list(range(5))


def test_the_replica_proves_its_key_and_serves_a_client_that_proves_it_too(replica):
    """The key is the replica's own secret (published on the feed, never in the checkpoint), mixed
    with Ray's auth token since Ray 2.60 starts local clusters with token authentication."""
    info, _ = replica
    assert len(info.secret) == auth.SECRET_BYTES and "secret" not in repr(info)
    token = ray_private.ray_auth_token(only_if_enabled=False) if info.key_uses_ray_token else None
    assert info.key_uses_ray_token == (ray_private.ray_auth_token(only_if_enabled=True) is not None)
    for key, accepted in ((auth.channel_key(info.secret, token), True), (info.secret, not info.key_uses_ray_token)):
        with connect(info) as sock:
            client_nonce, server_nonce, server_proof = challenge(sock)
            assert auth.verify(key, auth.Role.SERVER, client_nonce, server_nonce, server_proof) == accepted
            proof = auth.proof(key, auth.Role.CLIENT, client_nonce, server_nonce)
            request = dumps(Request(RequestKind.CALL, "__call__", (7,), {}).to_wire())
            sock.sendall(frame(Kind.PROOF, 0, proof) + frame(Kind.CALL, 1, request))
            kind, payload = read_frame(sock)
            assert (kind, loads(payload) if kind == Kind.OK else None) == ((Kind.OK, 7) if accepted else (Kind.DENIED, None))


def test_a_loopback_replica_opens_on_its_node_ip_when_asked_and_serves_there(replica):
    """What the controller asks of running replicas once a second machine joins the cluster."""
    import dataclasses

    import ray

    from serve_nb.common.names import NAMESPACE, replica_actor_name
    from serve_nb.types import DeploymentID

    info, handle = replica
    node_ip = ray.util.get_node_ip_address()
    if ipaddress.ip_address(node_ip).is_loopback:
        pytest.skip("this machine's Ray node address is itself loopback")
    actor = ray.get_actor(replica_actor_name(DeploymentID(APP, "Echo"), info.replica_id), namespace=NAMESPACE)
    opened = ray.get(actor.listen_on_node_ip.remote())
    assert (opened.host, opened.secret) == (node_ip, info.secret) and opened.port != info.port
    assert ray.get(actor.listen_on_node_ip.remote()) == opened, "asking again changes nothing"
    token = ray_private.ray_auth_token(only_if_enabled=False) if info.key_uses_ray_token else None
    key = auth.channel_key(info.secret, token)
    for address in (opened, dataclasses.replace(opened, host=info.host, port=info.port)):  # both listen
        with connect(address) as sock:
            client_nonce, server_nonce, server_proof = challenge(sock)
            assert auth.verify(key, auth.Role.SERVER, client_nonce, server_nonce, server_proof)
            request = dumps(Request(RequestKind.CALL, "__call__", (9,), {}).to_wire())
            proof = auth.proof(key, auth.Role.CLIENT, client_nonce, server_nonce)
            sock.sendall(frame(Kind.PROOF, 0, proof) + frame(Kind.CALL, 1, request))
            kind, payload = read_frame(sock)
            assert (kind, loads(payload)) == (Kind.OK, 9)
    assert handle.remote(3).result() == 3
