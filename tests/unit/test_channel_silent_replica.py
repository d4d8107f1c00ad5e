"""A replica that stops answering with its socket still open (its node frozen, or cut off): the caller's
heartbeat gives it up within its timeout and fails the requests on it, while a replica that is merely
busy keeps its requests; connecting gives up after the connect timeout; TCP keepalive is on."""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Awaitable, Callable

import pytest

from channel_peer import KEY, over_channel
from serve_nb.data.channel import Address, ChannelClient, ChannelServer, ConnectionLost, NotSent
from serve_nb.data.channel import liveness
from test_channel_round_trip import FakeReplica, call

HEARTBEAT_S = 0.4
#: Silence is noticed between the timeout and one beat after it; the rest is slack for a loaded machine.
BOUND_S = HEARTBEAT_S * (1 + 1 / liveness.BEATS_PER_TIMEOUT) + 1.0
WAIT_S = 10.0


def with_replica(test: Callable[..., Awaitable[Any]], vouch: liveness.Vouch | None = None) -> Any:
    replica = FakeReplica()
    return over_channel(replica, lambda server, client: test(replica, server, client), WAIT_S,
                        heartbeat_timeout_s=HEARTBEAT_S, vouch=vouch)


def freeze(server: ChannelServer) -> None:
    """What SIGSTOP does to the replica, seen from the caller: the socket stays open, nothing is read."""
    for conn in server._connections:
        assert conn.transport is not None
        conn.transport.pause_reading()


async def failed_after_freezing(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> float:
    """Freeze the replica while a request runs on it; the seconds until that request failed as unanswered."""
    pending = asyncio.ensure_future(client.call(call("block")))
    await replica.blocked.wait()
    freeze(server)
    loop = asyncio.get_running_loop()
    frozen_at = loop.time()
    with pytest.raises(ConnectionLost, match="stopped answering"):
        await pending
    return loop.time() - frozen_at


def test_requests_on_a_replica_that_stops_answering_fail_within_the_heartbeat_timeout():
    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        unusable: list[ChannelClient] = []
        client.on_unusable = unusable.append
        assert await client.call(call("echo", 1)) == ((1,), {})
        waited = await failed_after_freezing(replica, server, client)
        assert HEARTBEAT_S * 0.9 <= waited <= BOUND_S, waited
        assert unusable == [client] and client.lost and not client.usable

    with_replica(test)


def test_a_replica_busy_longer_than_the_timeout_keeps_its_request():
    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        pending = asyncio.ensure_future(client.call(call("block")))
        await replica.blocked.wait()
        await asyncio.sleep(3 * HEARTBEAT_S)  # the duration under test: the replica answers PINGs meanwhile
        assert not pending.done() and client.usable
        replica.gate.set()
        assert await pending == "unblocked"

    with_replica(test)


def thaw(server: ChannelServer) -> None:
    for conn in server._connections:
        assert conn.transport is not None
        conn.transport.resume_reading()


def test_a_silent_replica_whose_process_is_vouched_for_keeps_its_request_until_its_loop_answers_again():
    """User code blocking the replica's loop silences the connection as a freeze does; Ray says its process
    lives, so the request waits instead of failing."""
    asked: list[float] = []

    async def alive() -> bool:
        asked.append(asyncio.get_running_loop().time())
        return True

    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        pending = asyncio.ensure_future(client.call(call("block")))
        await replica.blocked.wait()
        freeze(server)
        while len(asked) < 2:  # asked again each time the silence reaches the timeout
            await asyncio.sleep(HEARTBEAT_S / 8)
        assert not pending.done() and client.usable
        thaw(server)
        replica.gate.set()
        assert await pending == "unblocked"
        assert client.usable

    with_replica(test, vouch=alive)


@pytest.mark.parametrize("answer", ["no", "error", "never"])
def test_a_silent_replica_not_vouched_for_fails_its_requests_at_most_a_vouch_timeout_later(answer: str):
    async def vouch() -> bool:
        if answer == "error":
            raise RuntimeError("the replica's actor is dead")
        if answer == "never":
            await asyncio.Event().wait()  # a frozen node: Ray's call gets no answer either
        return False

    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        waited = await failed_after_freezing(replica, server, client)
        assert HEARTBEAT_S * 0.9 <= waited <= BOUND_S + liveness.VOUCH_TIMEOUT_S, waited
        assert client.lost

    with_replica(test, vouch=vouch)


def test_an_idle_connection_to_a_silent_replica_is_given_up_and_reported():
    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        unusable: asyncio.Future[ChannelClient] = asyncio.get_running_loop().create_future()
        client.on_unusable = unusable.set_result
        assert await client.call(call("echo", 1)) == ((1,), {})
        freeze(server)
        assert await asyncio.wait_for(unusable, BOUND_S) is client
        assert client.lost

    with_replica(test)


def test_a_connection_that_does_not_open_gives_up_after_the_connect_timeout(monkeypatch: pytest.MonkeyPatch):
    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def never_answers(*args: Any, **kwargs: Any) -> Any:
            await asyncio.Event().wait()  # a host that drops the SYN

        monkeypatch.setattr(loop, "create_connection", never_answers)
        client = ChannelClient(Address("192.0.2.1", 9), KEY, connect_timeout_s=0.2)
        started = loop.time()
        with pytest.raises(NotSent, match="cannot connect"):
            await asyncio.wait_for(client.call(call("echo", 1)), WAIT_S)
        assert 0.15 <= loop.time() - started <= 0.2 + 1.0
        assert client.lost

    asyncio.run(main())


def test_tcp_connections_to_replicas_use_keepalive():
    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        assert await client.call(call("echo", 1)) == ((1,), {})
        conn = client._conn
        assert conn is not None and conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == liveness.KEEPALIVE_IDLE_S

    with_replica(test)


@pytest.mark.parametrize("raw", ["0", "-1", "soon", "inf", "nan"])
def test_a_bad_heartbeat_timeout_in_the_environment_says_what_to_set(raw: str):
    with pytest.raises(ValueError, match=f"{liveness.HEARTBEAT_TIMEOUT_ENV}=.*positive number of seconds"):
        liveness.heartbeat_timeout_s({liveness.HEARTBEAT_TIMEOUT_ENV: raw})


def test_the_timeouts_come_from_the_environment_or_their_defaults():
    assert liveness.heartbeat_timeout_s({}) == liveness.DEFAULT_HEARTBEAT_TIMEOUT_S <= 5.0
    assert liveness.heartbeat_timeout_s({liveness.HEARTBEAT_TIMEOUT_ENV: " 2.5 "}) == 2.5
    assert liveness.connect_timeout_s({liveness.CONNECT_TIMEOUT_ENV: "1"}) == 1.0
