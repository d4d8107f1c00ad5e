"""The channel's handshake: both ends prove they hold the replica's key without sending it, in one round
trip; a proof is good for one connection only and for one role only; a caller believes nothing from a
process that cannot prove it is the replica (not even a reply, which would be unpickled)."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any, Awaitable, Callable

import pytest

from channel_peer import KEY, challenge, closed_by_peer, frame, proof_frame, read_frame
from serve_nb.common.serialization import dumps, loads
from serve_nb.data.channel import Address, ChannelClient, ChannelServer, Kind, NotSent, auth
from serve_nb.data.router import channel_connector
from serve_nb.exceptions import ReplicaUnavailableError
from serve_nb.types import ReplicaInfo
from test_channel_hostile_peers import with_server
from test_channel_round_trip import FakeReplica, call

WAIT_S = 10.0


# -- the key and the proofs (pure) ------------------------------------------------------------------------------


def test_without_rays_token_the_key_is_the_replicas_secret():
    secret = auth.new_secret()
    assert len(secret) == auth.SECRET_BYTES and auth.new_secret() != secret
    assert auth.channel_key(secret) == auth.channel_key(secret, None) == auth.channel_key(secret, b"") == secret


def test_with_rays_token_the_key_needs_both_the_secret_and_the_token():
    secret, token = auth.new_secret(), b"ray-token-" + bytes(22)
    key = auth.channel_key(secret, token)
    assert len(key) == 32 and key == auth.channel_key(secret, token)
    assert key not in (secret, auth.channel_key(secret, b"another token"), auth.channel_key(auth.new_secret(), token))


def test_a_proof_is_bound_to_its_role_both_nonces_and_the_key():
    cn, sn = auth.new_nonce(), auth.new_nonce()
    client = auth.proof(KEY, auth.Role.CLIENT, cn, sn)
    assert len(client) == auth.PROOF_BYTES and auth.verify(KEY, auth.Role.CLIENT, cn, sn, client)
    assert not auth.verify(KEY, auth.Role.SERVER, cn, sn, client), "one side's proof is no proof of the other"
    assert not auth.verify(KEY, auth.Role.CLIENT, cn, auth.new_nonce(), client), "nor of another connection"
    assert not auth.verify(KEY, auth.Role.CLIENT, auth.new_nonce(), sn, client)
    assert not auth.verify(b"another key", auth.Role.CLIENT, cn, sn, client)


# -- a real server against a hand-written caller -----------------------------------------------------------------


def test_a_caller_sends_its_requests_right_after_its_proof_and_is_served():
    async def test(replica: FakeReplica, server: ChannelServer, address: Address) -> None:
        reader, writer = await asyncio.open_connection(address.host, address.port)
        writer.write(await proof_frame(reader, writer) + frame(Kind.CALL, 1, dumps(call("echo", 5).to_wire())))
        kind, rid, payload = await read_frame(reader)
        assert (kind, rid, loads(payload)) == (Kind.OK, 1, ((5,), {}))
        writer.close()

    with_server(test)


def test_a_recorded_proof_is_refused_on_a_new_connection_even_with_the_same_client_nonce():
    async def test(replica: FakeReplica, server: ChannelServer, address: Address) -> None:
        reader, writer = await asyncio.open_connection(address.host, address.port)
        client_nonce, server_nonce, _ = await challenge(reader, writer)
        recorded = auth.proof(KEY, auth.Role.CLIENT, client_nonce, server_nonce)
        writer.write(frame(Kind.PROOF, 0, recorded))
        writer.close()

        reader, writer = await asyncio.open_connection(address.host, address.port)
        _, fresh_nonce, _ = await challenge(reader, writer, client_nonce)
        assert fresh_nonce != server_nonce
        writer.write(frame(Kind.PROOF, 0, recorded) + frame(Kind.CALL, 1, dumps(call("echo").to_wire())))
        assert (await read_frame(reader))[0] == Kind.DENIED and await closed_by_peer(reader)
        assert replica.requests == []
        writer.close()

    with_server(test)


def test_the_replicas_own_proof_sent_back_is_refused():
    async def test(replica: FakeReplica, server: ChannelServer, address: Address) -> None:
        reader, writer = await asyncio.open_connection(address.host, address.port)
        _, _, server_proof = await challenge(reader, writer)
        writer.write(frame(Kind.PROOF, 0, server_proof))
        assert (await read_frame(reader))[0] == Kind.DENIED and await closed_by_peer(reader)
        writer.close()

    with_server(test)


@pytest.mark.parametrize("second", [Kind.HELLO, Kind.CALL, Kind.CANCEL])
def test_anything_but_a_proof_after_the_challenge_is_refused(second: Kind):
    async def test(replica: FakeReplica, server: ChannelServer, address: Address) -> None:
        reader, writer = await asyncio.open_connection(address.host, address.port)
        await challenge(reader, writer)
        writer.write(frame(second, 1, auth.new_nonce()))
        assert (await read_frame(reader))[0] == Kind.DENIED and await closed_by_peer(reader)
        assert replica.requests == []
        writer.close()

    with_server(test)


def test_neither_the_key_nor_the_secret_ever_travels():
    """Everything both ends send, recorded by a relay between them, holds neither."""
    secret = auth.new_secret()
    key = auth.channel_key(secret, b"a Ray token")

    async def main() -> None:
        server = ChannelServer(FakeReplica(), key)
        address = await server.start("127.0.0.1", use_uds=False)
        sent = bytearray()

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                sent.extend(data)
                writer.write(data)
            writer.close()

        async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
            server_reader, server_writer = await asyncio.open_connection(address.host, address.port)
            await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

        middle = await asyncio.start_server(relay, "127.0.0.1", 0)
        client = ChannelClient(Address("127.0.0.1", middle.sockets[0].getsockname()[1]), key)
        assert await client.call(call("echo", 1)) == ((1,), {})
        client.close()
        middle.close()
        server.abort()
        assert len(sent) > 3 * auth.NONCE_BYTES and key not in sent and secret not in sent

    asyncio.run(asyncio.wait_for(main(), WAIT_S))


# -- a real caller against a hand-written replica ----------------------------------------------------------------


class Impostor:
    """A process on a replica's address: it answers HELLO as told and records what the caller sends."""

    def __init__(self, answer: Callable[[bytes], bytes]) -> None:
        self.answer = answer
        self.frames: list[int] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                kind, _, payload = await read_frame(reader)
                self.frames.append(kind)
                if kind == Kind.HELLO:
                    writer.write(self.answer(payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def against(impostor: Impostor, test: Callable[[ChannelClient], Awaitable[None]], **client_options: Any) -> None:
    async def main() -> None:
        listener = await asyncio.start_server(impostor.handle, "127.0.0.1", 0)
        client = ChannelClient(Address("127.0.0.1", listener.sockets[0].getsockname()[1]), KEY, **client_options)
        try:
            await asyncio.wait_for(test(client), WAIT_S)
        finally:
            client.close()
            listener.close()

    asyncio.run(main())


class Exploit:
    """A reply that runs code when unpickled."""

    ran = False

    def __reduce__(self) -> Any:
        return (setattr, (Exploit, "ran", True))


def test_a_caller_needs_one_round_trip_its_request_follows_its_proof_without_waiting():
    """The replica answers HELLO with its CHALLENGE and then says nothing until it has a CALL: a caller
    waiting for anything more from it would never send one."""
    replies: list[bytes] = []

    def honest(client_nonce: bytes) -> bytes:
        server_nonce = auth.new_nonce()
        replies.append(auth.proof(KEY, auth.Role.CLIENT, client_nonce, server_nonce))
        return frame(Kind.CHALLENGE, 0, server_nonce + auth.proof(KEY, auth.Role.SERVER, client_nonce, server_nonce))

    class Replica(Impostor):
        async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            kind, _, nonce = await read_frame(reader)
            writer.write(self.answer(nonce))
            kind, _, proof = await read_frame(reader)
            assert (kind, proof) == (Kind.PROOF, replies[0])
            kind, rid, payload = await read_frame(reader)
            _, method, args, *_ = loads(payload)
            writer.write(frame(Kind.OK, rid, dumps((method, args))))

    async def test(client: ChannelClient) -> None:
        assert await client.call(call("echo", 3)) == ("echo", (3,))

    against(Replica(honest), test)


def test_a_caller_sends_nothing_to_and_unpickles_nothing_from_a_process_that_cannot_prove_it_is_the_replica():
    def forged(client_nonce: bytes) -> bytes:
        evil = pickle.dumps(Exploit())
        return frame(Kind.CHALLENGE, 0, auth.new_nonce() + b"\0" * auth.PROOF_BYTES) + frame(Kind.OK, 1, evil)

    impostor = Impostor(forged)

    async def test(client: ChannelClient) -> None:
        unusable: list[ChannelClient] = []
        client.on_unusable = unusable.append
        with pytest.raises(ReplicaUnavailableError, match="did not prove it is the replica"):
            await client.call(call("echo", "a secret argument"))
        assert impostor.frames == [Kind.HELLO], "no PROOF and no CALL reached it"
        assert not Exploit.ran and client.lost and unusable == [client]

    against(impostor, test)


def test_a_process_replaying_a_real_challenge_cannot_pass_for_the_replica():
    """The replica's proof covers the caller's fresh nonce, so one recorded from an earlier connection fails."""
    old_nonce = auth.new_nonce()
    recorded_server_nonce = auth.new_nonce()
    recorded = recorded_server_nonce + auth.proof(KEY, auth.Role.SERVER, old_nonce, recorded_server_nonce)
    impostor = Impostor(lambda client_nonce: frame(Kind.CHALLENGE, 0, recorded))

    async def test(client: ChannelClient) -> None:
        with pytest.raises(ReplicaUnavailableError, match="did not prove"):
            await client.call(call("echo"))
        assert impostor.frames == [Kind.HELLO]

    against(impostor, test)


def test_a_huge_frame_before_the_proof_is_refused_without_being_read():
    impostor = Impostor(lambda client_nonce: frame(Kind.CHALLENGE, 0, b"\0" * 4096))

    async def test(client: ChannelClient) -> None:
        with pytest.raises(ReplicaUnavailableError, match="did not prove"):
            await client.call(call("echo"))

    against(impostor, test)


def test_a_replica_saying_goodbye_in_the_handshake_means_not_sent():
    impostor = Impostor(lambda client_nonce: frame(Kind.GOODBYE))

    async def test(client: ChannelClient) -> None:
        with pytest.raises(NotSent, match="stopping"):
            await client.call(call("echo"))
        assert client.lost

    against(impostor, test)


def test_a_replica_that_never_answers_hello_is_given_up_as_not_sent():
    impostor = Impostor(lambda client_nonce: b"")

    async def test(client: ChannelClient) -> None:
        unusable: list[ChannelClient] = []
        client.on_unusable = unusable.append
        with pytest.raises(NotSent, match="cannot connect"):
            await client.call(call("echo"))
        assert client.lost and unusable == [client] and impostor.frames == [Kind.HELLO]

    against(impostor, test, handshake_timeout_s=0.1)


# -- routers key each replica's connection as the replica says --------------------------------------------------


@pytest.mark.parametrize("uses_token", [False, True])
def test_a_router_keys_a_connection_with_the_replicas_secret_and_rays_token_when_the_replica_says_so(uses_token: bool):
    secret, token = auth.new_secret(), b"the cluster's Ray token"

    async def main() -> None:
        server = ChannelServer(FakeReplica(), auth.channel_key(secret, token if uses_token else None))
        address = await server.start("127.0.0.1", use_uds=False)
        info = ReplicaInfo("r1", address.host, address.port, None, "n", 1, secret=secret, key_uses_ray_token=uses_token)
        client = channel_connector("", ray_token=lambda: token)(info)
        try:
            assert await client.call(call("echo", 1)) == ((1,), {})
        finally:
            client.close()
            server.abort()

    asyncio.run(asyncio.wait_for(main(), WAIT_S))


def test_a_router_without_rays_token_says_why_a_replica_keyed_with_it_refuses_it(caplog: pytest.LogCaptureFixture):
    secret = auth.new_secret()

    async def main() -> None:
        server = ChannelServer(FakeReplica(), auth.channel_key(secret, b"the cluster's Ray token"))
        address = await server.start("127.0.0.1", use_uds=False)
        info = ReplicaInfo("r1", address.host, address.port, None, "n", 1, secret=secret, key_uses_ray_token=True)
        client = channel_connector("", ray_token=lambda: None)(info)
        try:
            with pytest.raises(ReplicaUnavailableError, match="did not prove"):
                await client.call(call("echo", 1))
        finally:
            client.close()
            server.abort()

    asyncio.run(asyncio.wait_for(main(), WAIT_S))
    assert "replica r1 authenticates callers with Ray's auth token, and this process has none" in caplog.text
