"""A caller and a replica talking over real sockets on one event loop, with a fake request handler:
values, errors, streams, limits, cancellation, goodbye and lost connections."""

from __future__ import annotations

import asyncio
import socket
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest

from serve_nb.common.serialization import LARGE_PAYLOAD_BYTES, remote_traceback_of
from channel_peer import KEY, proof_frame
from loop_turns import until
from serve_nb.data.channel import Address, ChannelClient, ChannelServer, ForObjectStore, NotSent, Rejected
from serve_nb.data.channel.buffers import Pieces
from serve_nb.data.channel.frames import Kind
from serve_nb.data.channel.server import Phase
from serve_nb.data.request import Request, RequestKind, StashedResult
from serve_nb.exceptions import ReplicaUnavailableError, RequestCancelledError


class FakeReplica:
    """The channel's RequestHandler: ``echo``, ``block`` (until ``gate`` opens), ``fail``; streams ``count``."""

    def __init__(self, capacity: int = 10) -> None:
        self.capacity = capacity
        self.ongoing = 0
        self.draining = False
        self.requests: list[Request] = []
        self.gate = asyncio.Event()
        self.blocked = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.stashed: list[Any] = []

    def try_acquire(self) -> bool:
        if self.draining or self.ongoing >= self.capacity:
            return False
        self.ongoing += 1
        return True

    def release(self) -> None:
        self.ongoing -= 1

    def stash(self, value: Any) -> str:
        self.stashed.append(value)
        return f"token-{len(self.stashed)}"

    def handle(self, request: Request) -> Awaitable[Any] | AsyncIterator[Any]:
        self.requests.append(request)
        return self._stream(request) if request.streams else self._call(request)

    async def _call(self, request: Request) -> Any:
        if request.method == "fail":
            raise ValueError("user code failed")
        if request.method == "block":
            return await self._block()
        if request.method == "make":
            return bytearray(request.args[0])
        return request.args, request.kwargs

    async def _block(self) -> str:
        self.blocked.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return "unblocked"

    async def _stream(self, request: Request) -> AsyncIterator[Any]:
        count, size = request.args
        for i in range(count):
            yield (i, b"z" * size)
        if request.method == "fail":
            raise ValueError("stream failed")
        if request.method == "block":
            yield await self._block()


def call(method: str, *args: Any, **kwargs: Any) -> Request:
    return Request(RequestKind.CALL, method, args, kwargs)


def stream(method: str, count: int, size: int = 0) -> Request:
    return Request(RequestKind.STREAM, method, (count, size), {})


def scenario(test: Callable[..., Awaitable[Any]], capacity: int = 10, key: bytes = KEY,
             replica_cls: type[FakeReplica] = FakeReplica) -> Any:
    """Run ``test(replica, server, client)`` with a server on 127.0.0.1 and a client to it."""

    async def main() -> Any:
        replica = replica_cls(capacity)
        server = ChannelServer(replica, KEY)
        address = await server.start("127.0.0.1", use_uds=False)
        client = ChannelClient(address, key)
        try:
            return await asyncio.wait_for(test(replica, server, client), 30)
        finally:
            client.close()
            server.abort()

    return asyncio.run(main())


def test_a_call_round_trips_args_kwargs_and_the_request_kind():
    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        assert await client.call(call("echo", 1, "two", three=3)) == ((1, "two"), {"three": 3})
        (seen,) = replica.requests
        assert seen == call("echo", 1, "two", three=3) and seen.kind is RequestKind.CALL
        assert replica.ongoing == 0

    scenario(test)


def test_many_concurrent_calls_share_one_connection():
    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        results = await asyncio.gather(*(client.call(call("echo", i)) for i in range(50)))
        assert [args for args, _ in results] == [(i,) for i in range(50)]
        assert len(server._connections) == 1

    scenario(test, capacity=100)


def test_a_user_error_comes_back_with_its_type_message_and_traceback():
    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        with pytest.raises(ValueError, match="user code failed") as info:
            await client.call(call("fail"))
        assert "user code failed" in (remote_traceback_of(info.value) or "")

    scenario(test)


def test_a_full_replica_rejects_and_takes_requests_again_once_a_slot_frees():
    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        first = asyncio.ensure_future(client.call(call("block")))
        await replica.blocked.wait()
        with pytest.raises(Rejected):
            await client.call(call("echo"))
        with pytest.raises(Rejected):
            async for _ in client.stream(stream("echo", 3)):
                pass
        replica.gate.set()
        assert await first == "unblocked"
        assert await client.call(call("echo", 1)) == ((1,), {})
        assert [r.method for r in replica.requests] == ["block", "echo"]  # the rejected ones never ran

    scenario(test, capacity=1)


def test_a_caller_with_another_key_trusts_no_reply_sends_nothing_and_becomes_unusable():
    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        unusable: list[ChannelClient] = []
        client.on_unusable = unusable.append
        with pytest.raises(ReplicaUnavailableError, match="did not prove it is the replica"):
            await client.call(call("echo"))
        assert client.lost and not client.usable and unusable == [client]
        assert replica.requests == []
        assert all(c._phase is not Phase.AUTHENTICATED for c in server._connections)

    scenario(test, key=b"another key")


def test_goodbye_lets_in_flight_requests_finish_then_later_ones_are_not_sent():
    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        unusable: list[ChannelClient] = []
        client.on_unusable = unusable.append
        in_flight = asyncio.ensure_future(client.call(call("block")))
        await replica.blocked.wait()
        closing = asyncio.ensure_future(server.close_gracefully())
        replica.draining = True  # the replica stops taking requests while it drains
        with pytest.raises(Rejected):
            await client.call(call("echo"))
        assert not closing.done()
        replica.gate.set()
        assert await in_flight == "unblocked"  # finished before the goodbye
        await closing
        while client.usable:  # until the GOODBYE frame arrives
            await asyncio.sleep(0)
        assert client.goodbye and not client.lost and unusable == [client]
        with pytest.raises(NotSent):
            await client.call(call("echo"))

    scenario(test)


def test_a_request_unanswered_when_goodbye_arrives_fails_as_not_sent():
    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        waiting = asyncio.ensure_future(client.call(call("block")))
        await replica.blocked.wait()
        (conn,) = server._connections
        conn.say_goodbye()  # GOODBYE promises nothing unanswered will run: the caller may retry it
        with pytest.raises(NotSent):
            await waiting

    scenario(test)


def test_a_lost_connection_fails_in_flight_requests_as_replica_unavailable():
    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        unusable: list[ChannelClient] = []
        client.on_unusable = unusable.append
        in_flight = asyncio.ensure_future(client.call(call("block")))
        streaming = client.stream(stream("block", 2))
        assert (await streaming.__anext__())[0] == 0
        await replica.blocked.wait()
        server.abort()  # the replica process died
        with pytest.raises(ReplicaUnavailableError, match="Lost the connection"):
            await in_flight
        with pytest.raises(ReplicaUnavailableError):
            async for _ in streaming:
                pass
        assert client.lost and unusable == [client]  # reported once

    scenario(test)


def test_cancelling_a_call_cancels_the_work_on_the_replica_and_frees_its_slot():
    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        task = asyncio.ensure_future(client.call(call("block")))
        await replica.blocked.wait()
        task.cancel()
        await replica.cancelled.wait()
        while replica.ongoing:  # until the server's task has finished
            await asyncio.sleep(0)
        assert await client.call(call("echo", 2)) == ((2,), {})

    scenario(test, capacity=1)


def test_a_caller_going_away_cancels_its_work_on_the_replica():
    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        task = asyncio.ensure_future(client.call(call("block")))
        await replica.blocked.wait()
        client.close()
        await replica.cancelled.wait()
        with pytest.raises(ReplicaUnavailableError):
            await task

    scenario(test)


def test_a_cancelled_request_reports_request_cancelled():
    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        task = asyncio.ensure_future(client.call(call("block")))
        await replica.blocked.wait()
        (conn,) = server._connections
        (server_task,) = conn._tasks.values()
        server_task.cancel()  # e.g. the replica's drain timed out
        with pytest.raises(RequestCancelledError):
            await task

    scenario(test)


def test_a_stream_yields_every_chunk_then_ends():
    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        items = [i async for i, _ in client.stream(stream("echo", 5))]
        assert items == [0, 1, 2, 3, 4] and replica.requests[0].kind is RequestKind.STREAM
        assert [i async for i in client.stream(stream("echo", 0))] == []

    scenario(test)


def test_a_stream_error_arrives_after_the_items_before_it():
    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        seen = []
        with pytest.raises(ValueError, match="stream failed"):
            async for i, _ in client.stream(stream("fail", 2)):
                seen.append(i)
        assert seen == [0, 1]

    scenario(test)


def test_leaving_a_stream_early_cancels_it_on_the_replica():
    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        agen = client.stream(stream("block", 1))
        assert (await agen.__anext__())[0] == 0
        await replica.blocked.wait()
        await agen.aclose()
        await replica.cancelled.wait()

    scenario(test)


def test_payloads_up_to_the_object_store_threshold_travel_whole_both_ways():
    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        big = bytes(range(256)) * (6 * 1024)  # 1.5 MiB
        assert await client.call(call("echo", big)) == ((big,), {})
        sizes = [len(chunk) async for _, chunk in client.stream(stream("echo", 8, 2 * 1024 * 1024))]
        assert sizes == [2 * 1024 * 1024] * 8

    scenario(test)


def test_a_call_with_large_arguments_is_not_sent_and_a_large_reply_is_kept_by_the_replica():
    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        with pytest.raises(ForObjectStore):  # the router sends such a call through Ray's object store
            await client.call(call("echo", bytearray(LARGE_PAYLOAD_BYTES)))
        assert replica.requests == [] and client.usable
        reply = await client.call(call("make", LARGE_PAYLOAD_BYTES))
        assert reply == StashedResult("token-1") and replica.stashed == [bytearray(LARGE_PAYLOAD_BYTES)]
        assert await client.call(call("make", 1000)) == bytearray(1000)  # a small reply comes as usual

    scenario(test)


def with_body(body: Pieces) -> Request:
    """A streamed request (as an HTTP one is) carrying ``body``; the replica records what it received."""
    return Request(RequestKind.STREAM, "echo", (1, 0), {"body": body})


def test_a_body_sent_as_pieces_arrives_whole_among_other_calls():
    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        parts = [bytes([i]) * (200_000 + i) for i in range(5)]
        body = Pieces(parts, sum(map(len, parts)))

        async def send() -> list[Any]:
            return [item async for item in client.stream(with_body(body))]

        _, small, _ = await asyncio.gather(send(), client.call(call("echo", 1)), send())
        received = [r.kwargs["body"] for r in replica.requests if r.kind is RequestKind.STREAM]
        assert [bytes(b) for b in received] == [b"".join(parts)] * 2 and all(isinstance(b, Pieces) for b in received)
        assert small == ((1,), {}) and replica.ongoing == 0 and next(iter(server._connections))._assemblies == {}

    scenario(test)


def test_a_rejected_call_with_buffers_leaves_its_buffers_unread_and_the_connection_usable():
    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        first = asyncio.ensure_future(client.call(call("block")))
        await replica.blocked.wait()
        body = Pieces([b"x" * 300_000], 300_000)
        with pytest.raises(Rejected):
            async for _ in client.stream(with_body(body)):
                pass
        replica.gate.set()
        assert await first == "unblocked"
        assert [item async for item in client.stream(with_body(body))] == [(0, b"")]
        assert bytes(replica.requests[-1].kwargs["body"]) == b"x" * 300_000 and client.usable

    scenario(test, capacity=1)


def test_an_unreachable_replica_is_not_sent_and_reported_once():
    async def main() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # nothing listens here once closed
        client = ChannelClient(Address("127.0.0.1", port), KEY)
        unusable: list[ChannelClient] = []
        client.on_unusable = unusable.append
        with pytest.raises(NotSent, match="cannot connect"):
            await client.call(call("echo"))
        with pytest.raises(NotSent):
            await client.call(call("echo"))
        assert client.lost and unusable == [client]

    asyncio.run(main())


def test_a_caller_on_the_same_node_uses_the_unix_socket():
    async def main() -> None:
        replica = FakeReplica()
        server = ChannelServer(replica, KEY)
        address = await server.start("127.0.0.1", node_id="node-1")
        assert address.uds_path is not None
        local = ChannelClient(address, KEY, local_node_id="node-1")
        remote = ChannelClient(address, KEY, local_node_id="node-2")
        try:
            assert await local.call(call("echo", 1)) == ((1,), {})
            assert await remote.call(call("echo", 2)) == ((2,), {})
            families = {c: c._conn.transport.get_extra_info("socket").family for c in (local, remote)}
            assert families == {local: socket.AF_UNIX, remote: socket.AF_INET}
        finally:
            local.close()
            remote.close()
            await server.close_gracefully()
        assert not __import__("os").path.exists(address.uds_path)

    asyncio.run(main())


def test_a_call_cancelled_before_it_ever_ran_gives_its_slot_back():
    """CALL and CANCEL in one read: the task is cancelled before it starts, so nothing of its own runs;
    the replica's slot must come back all the same, or a replica at capacity rejects everything for good."""
    from serve_nb.common.serialization import dumps
    from serve_nb.data.channel.frames import HEADER, Kind

    async def test(replica: FakeReplica, server: ChannelServer, client: ChannelClient) -> None:
        reader, writer = await asyncio.open_connection(client.address.host, client.address.port)
        payload = dumps(call("block").to_wire())
        writer.write(await proof_frame(reader, writer)
                     + HEADER.pack(len(payload), Kind.CALL, 7) + payload
                     + HEADER.pack(0, Kind.CANCEL, 7))
        await writer.drain()
        for _ in range(1000):  # bounded by loop turns: the server handles the frames, then the task ends
            if replica.ongoing == 0 and not any(c.busy for c in server._connections):
                break
            await asyncio.sleep(0)
        assert replica.ongoing == 0 and replica.requests == []  # never ran, slot returned
        assert await client.call(call("echo", 1)) == ((1,), {})  # capacity 1: the slot is usable again
        writer.close()

    scenario(test, capacity=1)


def test_large_arguments_to_a_replica_on_this_node_go_through_shared_memory_and_come_back_for_reuse():
    import gc

    import numpy as np

    from serve_nb.data.channel import shm

    if not shm.available():
        pytest.skip("no /dev/shm on this machine")

    class Summing(FakeReplica):
        async def _call(self, request: Request) -> Any:
            (arr,) = request.args
            return float(arr.sum()), arr.flags.writeable

    async def main() -> None:
        replica = Summing()
        server = ChannelServer(replica, KEY)
        address = await server.start("127.0.0.1", node_id="node-1")  # with its Unix socket: callers on node-1
        arena = shm.ShmArena(max_bytes=64 * 1024 * 1024)
        client = ChannelClient(address, KEY, local_node_id="node-1", shm_arena=arena)
        try:
            arr = np.ones(shm.SHARED_MEMORY_BYTES // 4, dtype=np.float32)
            assert await client.call(call("sum", arr)) == (float(arr.size), False)  # read in place, read-only
            replica.requests.clear()  # the replica's record of the request held the array: drop it
            gc.collect()
            await until(lambda: not client._shm_out, "the replica's RELEASE")
            assert sum(len(pool) for pool in arena._free.values()) == 1  # back in the pool, not unlinked
            assert await client.call(call("sum", arr * 2)) == (2.0 * arr.size, False)  # the pooled segment, reused
            small = np.ones(10, dtype=np.float32)
            assert await client.call(call("sum", small)) == (10.0, True)  # small: through the socket, as before
        finally:
            client.close()
            server.abort()
            arena.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_large_body_from_the_proxy_goes_through_shared_memory_to_a_replica_on_this_node():
    from serve_nb.data.channel import shm
    from serve_nb.data.channel.buffers import Pieces

    if not shm.available():
        pytest.skip("no /dev/shm on this machine")

    class BodyLength(FakeReplica):
        async def _stream(self, request: Request) -> AsyncIterator[Any]:
            _scope, body, _debug, _rest = request.args
            yield body.size, sum(len(piece) for piece in body.pieces)

    async def main() -> None:
        replica = BodyLength()
        server = ChannelServer(replica, KEY)
        address = await server.start("127.0.0.1", node_id="node-1")
        arena = shm.ShmArena(max_bytes=64 * 1024 * 1024)
        client = ChannelClient(address, KEY, local_node_id="node-1", shm_arena=arena)
        try:
            body = Pieces([b"a" * 400_000, b"b" * 400_000], 800_000)
            request = Request.http({"type": "http"}, body, False)
            assert [item async for item in client.stream(request)] == [(800_000, 800_000)]
            # The replica copied the body out and let the segment go before replying: its RELEASE came
            # in front of the reply, so the segment is back in the pool as the call returns.
            assert not client._shm_out and sum(len(pool) for pool in arena._free.values()) == 1
            assert [item async for item in client.stream(request)] == [(800_000, 800_000)]
            assert not client._shm_out and sum(len(pool) for pool in arena._free.values()) == 1, "reused"
        finally:
            client.close()
            server.abort()
            arena.close()

    asyncio.run(asyncio.wait_for(main(), 30))


class _Writes:
    """A transport that records each write (``writelines`` as one)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, parts: Any) -> None:
        self.writes.append(b"".join(bytes(p) for p in parts))

    def get_extra_info(self, name: str) -> None:
        return None

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def _frames(data: bytes) -> list[tuple[int, int, bytes]]:
    from serve_nb.data.channel.frames import HEADER

    out = []
    while data:
        length, kind, rid = HEADER.unpack_from(data)
        out.append((kind, rid, data[HEADER.size : HEADER.size + length]))
        data = data[HEADER.size + length :]
    return out


def test_a_segments_release_goes_out_in_one_write_with_the_next_reply_or_soon_on_its_own():
    from serve_nb.data.channel import server as server_module

    async def main() -> None:
        server = ChannelServer(FakeReplica(), key=KEY)
        conn = server_module._ServerConnection(server)
        transport = _Writes()
        conn.connection_made(transport)  # type: ignore[arg-type]
        try:
            conn._release_soon("serve_nb-0-1-1")
            assert transport.writes == [], "held for the reply"
            conn.send(Kind.OK, 7, b"reply")
            [write] = transport.writes
            assert _frames(write) == [(Kind.RELEASE, 0, b"serve_nb-0-1-1"), (Kind.OK, 7, b"reply")]

            await asyncio.to_thread(conn._release_soon, "serve_nb-0-1-2")  # from another thread, no reply after
            await until(lambda: len(transport.writes) == 2, "the release on its own")
            assert _frames(transport.writes[1]) == [(Kind.RELEASE, 0, b"serve_nb-0-1-2")]
        finally:
            conn.connection_lost(None)
            server.abort()

    asyncio.run(asyncio.wait_for(main(), 10))
