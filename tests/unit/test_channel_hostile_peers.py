"""A replica's channel against a peer without the key, or sending more than a frame may carry:
nothing but small handshake frames is read before the caller's proof is checked, handshakes expire,
unauthenticated connections are capped, and oversized payloads fail with a clear error instead of a
dead connection."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import pytest

from channel_peer import KEY, challenge, closed_by_peer, frame, proof_frame, read_frame, receive
from serve_nb.common.serialization import dumps
from serve_nb.data.channel import ChannelClient, ChannelServer, FrameTooLargeError, Kind, auth
from serve_nb.data.channel.buffers import Pieces
from serve_nb.data.channel.frames import HEADER, FrameProtocol
from serve_nb.data.channel.server import MAX_HELLO_BYTES, listen_host
from test_channel_round_trip import FakeReplica, call, stream, with_body

#: Bounds every wait in this module: a test that hangs fails instead.
WAIT_S = 10.0
ANNOUNCED = 100 * 1024 * 1024  # what a hostile peer claims to send


def with_server(test: Callable[..., Awaitable[Any]], **server_options: Any) -> Any:
    async def main() -> Any:
        replica = FakeReplica()
        server = ChannelServer(replica, KEY, **server_options)
        address = await server.start("127.0.0.1", use_uds=False)
        try:
            return await asyncio.wait_for(test(replica, server, address), WAIT_S)
        finally:
            server.abort()

    return asyncio.run(main())


def test_a_first_frame_that_is_not_hello_is_denied_before_its_payload_is_read():
    async def test(replica: FakeReplica, server: ChannelServer, address: Any) -> None:
        reader, writer = await asyncio.open_connection(address.host, address.port)
        writer.write(HEADER.pack(ANNOUNCED, Kind.CALL, 1) + b"x" * 1024)
        assert (await read_frame(reader))[0] == Kind.DENIED
        assert await closed_by_peer(reader)
        (conn,) = server._connections or [None]
        assert conn is None or conn.buffered == 0
        assert replica.requests == []
        writer.close()

    with_server(test)


def test_a_hello_over_the_bound_is_denied_and_closed():
    async def test(replica: FakeReplica, server: ChannelServer, address: Any) -> None:
        reader, writer = await asyncio.open_connection(address.host, address.port)
        writer.write(HEADER.pack(MAX_HELLO_BYTES + 1, Kind.HELLO, 0))  # the payload never follows
        assert (await read_frame(reader))[0] == Kind.DENIED
        assert await closed_by_peer(reader)
        writer.close()

    with_server(test)


def test_an_idle_handshake_is_closed_after_the_deadline():
    async def test(replica: FakeReplica, server: ChannelServer, address: Any) -> None:
        reader, writer = await asyncio.open_connection(address.host, address.port)
        started = asyncio.get_running_loop().time()
        assert await closed_by_peer(reader)
        assert asyncio.get_running_loop().time() - started >= 0.2
        assert server._unauthenticated == {}
        writer.close()

    with_server(test, handshake_timeout_s=0.2)


def test_an_authenticated_connection_outlives_the_handshake_deadline():
    async def test(replica: FakeReplica, server: ChannelServer, address: Any) -> None:
        client = ChannelClient(address, KEY)
        assert await client.call(call("echo", 1)) == ((1,), {})
        (conn,) = server._connections
        assert conn._deadline is None and server._unauthenticated == {}  # the timer was cancelled
        client.close()

    with_server(test, handshake_timeout_s=0.05)


def test_unauthenticated_connections_beyond_the_cap_drop_the_oldest_and_callers_still_get_in():
    async def test(replica: FakeReplica, server: ChannelServer, address: Any) -> None:
        idle = [await asyncio.open_connection(address.host, address.port) for _ in range(5)]
        assert await closed_by_peer(idle[0][0]) and await closed_by_peer(idle[1][0])
        assert len(server._unauthenticated) <= 3
        client = ChannelClient(address, KEY)
        assert await client.call(call("echo", 2)) == ((2,), {})
        client.close()
        for _, writer in idle:
            writer.close()

    with_server(test, max_unauthenticated=3)


def test_a_wrong_proof_of_the_right_size_is_denied_and_what_follows_it_is_not_run():
    async def test(replica: FakeReplica, server: ChannelServer, address: Any) -> None:
        reader, writer = await asyncio.open_connection(address.host, address.port)
        await challenge(reader, writer)
        payload = dumps(call("echo").to_wire())
        writer.write(frame(Kind.PROOF, 0, b"x" * auth.PROOF_BYTES) + frame(Kind.CALL, 1, payload))
        kind, _, message = await read_frame(reader)
        assert kind == Kind.DENIED and message == b"channel authentication failed"
        assert await closed_by_peer(reader)
        assert replica.requests == []
        writer.close()

    with_server(test)


@pytest.mark.parametrize("nonce_bytes", [0, 16, auth.NONCE_BYTES + 1])
def test_a_hello_whose_nonce_is_not_32_bytes_is_denied(nonce_bytes: int):
    async def test(replica: FakeReplica, server: ChannelServer, address: Any) -> None:
        reader, writer = await asyncio.open_connection(address.host, address.port)
        writer.write(frame(Kind.HELLO, 0, b"n" * nonce_bytes))
        assert (await read_frame(reader))[0] == Kind.DENIED
        assert await closed_by_peer(reader)
        writer.close()

    with_server(test)


def test_the_caller_refuses_to_send_an_oversized_request_and_stays_usable():
    async def test(replica: FakeReplica, server: ChannelServer, address: Any) -> None:
        client = ChannelClient(address, KEY, max_frame=4096)
        with pytest.raises(FrameTooLargeError, match="request is .* over the channel's limit"):
            await client.call(call("echo", b"x" * 8192))
        with pytest.raises(FrameTooLargeError):
            async for _ in client.stream(stream("echo", b"x" * 8192)):  # type: ignore[arg-type]
                pass
        assert replica.requests == [] and client.usable
        assert await client.call(call("echo", 3)) == ((3,), {})
        client.close()

    with_server(test)


def test_an_oversized_request_reaching_the_replica_fails_with_a_clear_error():
    async def test(replica: FakeReplica, server: ChannelServer, address: Any) -> None:
        client = ChannelClient(address, KEY)  # a caller with a larger limit than the replica's
        with pytest.raises(FrameTooLargeError, match="request is"):
            await client.call(call("echo", b"x" * 8192))
        assert replica.requests == []

    with_server(test, max_frame=4096)


def test_a_request_whose_buffers_would_pass_the_replicas_limit_fails_before_they_are_read():
    async def test(replica: FakeReplica, server: ChannelServer, address: Any) -> None:
        client = ChannelClient(address, KEY)  # a caller with a larger limit than the replica's
        with pytest.raises(FrameTooLargeError, match="request is"):
            async for _ in client.stream(with_body(Pieces([b"x" * 300_000], 300_000))):
                pass
        assert replica.requests == [] and client.usable and await client.call(call("echo", 5)) == ((5,), {})
        client.close()

    with_server(test, max_frame=64 * 1024)


def test_a_reply_over_the_replicas_limit_comes_back_as_the_callers_error():
    async def test(replica: FakeReplica, server: ChannelServer, address: Any) -> None:
        client = ChannelClient(address, KEY)
        with pytest.raises(FrameTooLargeError, match="streamed item is"):
            async for _ in client.stream(stream("echo", 1, 8192)):
                pass
        assert client.usable and await client.call(call("echo", 4)) == ((4,), {})
        client.close()

    with_server(test, max_frame=4096)


def test_a_reply_over_the_callers_limit_fails_that_request_with_a_clear_error():
    async def test(replica: FakeReplica, server: ChannelServer, address: Any) -> None:
        client = ChannelClient(address, KEY, max_frame=4096)
        with pytest.raises(FrameTooLargeError, match="reply is"):
            async for _ in client.stream(stream("echo", 1, 8192)):
                pass
        client.close()

    with_server(test)


class Recorder(FrameProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[tuple[int, int, bytes]] = []
        self.too_large: list[tuple[int, int, int]] = []

    def on_frame(self, kind: int, rid: int, payload: bytes) -> None:
        self.frames.append((kind, rid, payload))

    def frame_too_large(self, kind: int, rid: int, length: int) -> None:
        self.too_large.append((kind, rid, length))


def test_an_oversized_header_is_refused_on_arrival_and_its_bytes_are_dropped():
    protocol = Recorder()
    protocol.max_frame = 1000
    receive(protocol, HEADER.pack(5, Kind.OK, 1) + b"small" + HEADER.pack(1001, Kind.OK, 2) + b"y" * 500)
    assert protocol.frames == [(Kind.OK, 1, b"small")] and protocol.too_large == [(Kind.OK, 2, 1001)]
    assert protocol.buffered == 0 and protocol.closed
    receive(protocol, b"y" * 501)
    assert protocol.frames == [(Kind.OK, 1, b"small")]  # nothing more is parsed after the refusal


@pytest.mark.parametrize(
    ("node_ip", "node_ips", "expected"),
    [
        ("192.0.2.2", ["192.0.2.2"], "127.0.0.1"),  # one node
        ("192.0.2.2", ["192.0.2.2", "192.0.2.2"], "127.0.0.1"),  # several nodes, one machine
        ("192.0.2.2", ["192.0.2.2", "192.0.2.3"], "192.0.2.2"),  # other machines must reach it
        ("127.0.0.1", ["127.0.0.1"], "127.0.0.1"),
        ("2001:db8::2", ["2001:db8::2"], "::1"),
    ],
)
def test_the_listener_binds_loopback_unless_another_machine_is_in_the_cluster(node_ip, node_ips, expected):
    assert listen_host(node_ip, node_ips) == expected


def test_a_ping_before_the_proof_is_denied_and_a_ping_after_it_gets_an_empty_pong():
    async def test(replica: FakeReplica, server: ChannelServer, address: Any) -> None:
        reader, writer = await asyncio.open_connection(address.host, address.port)
        writer.write(frame(Kind.PING, 0, b"x" * 32))
        assert (await read_frame(reader))[0] == Kind.DENIED
        assert await closed_by_peer(reader)
        writer.close()
        reader, writer = await asyncio.open_connection(address.host, address.port)
        writer.write(await proof_frame(reader, writer) + frame(Kind.PING, 0, b"y" * 1024))
        assert await read_frame(reader) == (Kind.PONG, 0, b"")  # nothing of what the caller sent comes back
        writer.close()

    with_server(test)
