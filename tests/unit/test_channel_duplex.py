"""Duplex requests on the channel (what a WebSocket rides on): items both ways for as long as the request
lasts, each way under a window, so a slow consumer on either end holds the other back instead of letting
a queue grow; and the frames that carry them (MESSAGE, CREDIT) are taken only where they belong."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any, AsyncIterator, Awaitable

import pytest

from channel_peer import KEY, CountingSlots, frame, over_channel, proof_frame, read_frame
from loop_turns import until
from serve_nb.data.channel import ChannelClient, ChannelServer, Kind
from serve_nb.data.channel.duplex import (
    CREDIT, WINDOW_BYTES, WINDOW_ITEMS, EndOfItems, Grants, ReceivedItems, Window, pump_items,
)
from serve_nb.data.request import Request, RequestKind

WAIT_S = 10.0


# -- the window, pure -----------------------------------------------------------------------------------


def test_a_window_has_room_until_its_items_or_its_bytes_are_spent_and_credit_gives_it_back():
    window = Window(max_items=3, max_bytes=100)
    for _ in range(3):
        assert window.has_room
        window.spend(10)
    assert not window.has_room  # three items out
    assert window.credit(CREDIT.pack(1, 10)) and window.has_room
    window.spend(90)
    assert not window.has_room  # 110 bytes out: one item may pass the bytes bound, the next waits
    assert window.credit(CREDIT.pack(99, 10**6)) and (window.items, window.bytes) == (0, 0)  # never below empty


@pytest.mark.parametrize("payload", [b"", b"x" * (CREDIT.size - 1), b"x" * (CREDIT.size + 1)])
def test_a_malformed_credit_is_ignored(payload: bytes):
    window = Window(max_items=1)
    window.spend(1)
    assert not window.credit(payload) and (window.items, window.bytes) == (1, 1)


def test_grants_go_out_at_half_a_window_of_items_or_of_bytes():
    sent: list[tuple[int, int]] = []
    grants = Grants(lambda payload: sent.append(CREDIT.unpack(payload)), max_items=8, max_bytes=1000)
    for _ in range(3):
        grants.took(10)
    assert sent == []
    grants.took(10)
    assert sent == [(4, 40)]
    grants.took(600)  # half the bytes at once
    assert sent == [(4, 40), (1, 600)]


def test_received_items_refuse_what_the_window_did_not_allow_and_end_after_the_queued_ones():
    async def scenario() -> None:
        credits: list[bytes] = []
        items = ReceivedItems(credits.append, max_items=2, max_bytes=1000)
        assert items.feed(pickle.dumps("a")) and items.feed(pickle.dumps("b"))
        assert not items.feed(pickle.dumps("c"))  # past the window
        items.end()
        assert not items.feed(pickle.dumps("d"))  # after the end
        assert [await items.take(), await items.take()] == ["a", "b"]
        assert sum(CREDIT.unpack(c)[0] for c in credits) == 2  # both taken: the caller was told
        with pytest.raises(EndOfItems):
            await items.take()

    asyncio.run(scenario())


def test_a_consumer_that_takes_everything_never_leaves_its_sender_stalled():
    """The window's promise: whatever the sizes, a consumer that keeps taking keeps the sender going."""

    async def scenario() -> None:
        window = Window(max_items=4, max_bytes=300)
        received = ReceivedItems(window.credit, max_items=4, max_bytes=300)
        sizes = [1, 250, 3, 120, 0, 299, 7, 7, 7, 7, 7, 1000, 2, 2]

        async def source() -> AsyncIterator[bytes]:
            for size in sizes:
                yield b"x" * size

        def send(kind: int, payload: bytes) -> None:
            received.end() if kind == Kind.BODY_END else received.feed(payload)

        async def no_back_pressure() -> None:
            return None

        pump = asyncio.ensure_future(pump_items(source(), send, no_back_pressure, window, 10**6))
        got = []
        while True:
            try:
                got.append(len(await asyncio.wait_for(received.take(), WAIT_S)))
            except EndOfItems:
                break
        await pump
        assert got == sizes

    asyncio.run(scenario())


def test_an_item_over_the_frame_limit_ends_the_items_instead_of_stalling_the_consumer():
    async def scenario() -> list[tuple[int, int]]:
        sent: list[tuple[int, int]] = []

        async def source() -> AsyncIterator[bytes]:
            yield b"small"
            yield b"x" * 1000
            yield b"never sent"

        async def no_back_pressure() -> None:
            return None

        await pump_items(source(), lambda kind, payload: sent.append((kind, len(payload))), no_back_pressure,
                         Window(), max_frame=500)
        return sent

    (first_kind, _), last = asyncio.run(scenario())
    assert first_kind == Kind.MESSAGE and last == (Kind.BODY_END, 0)


# -- over the channel ---------------------------------------------------------------------------------


class DuplexReplica(CountingSlots):
    """A RequestHandler whose duplex requests echo each item back (upper-cased when a string) until the
    caller's items end; it can also stop reading (``reading`` cleared) to let the window fill."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[Any] = []
        self.reading = asyncio.Event()
        self.reading.set()
        self.taken = 0
        self.ended = asyncio.Event()

    def handle(self, request: Request) -> AsyncIterator[Any]:
        return self._echo(request)

    async def _echo(self, request: Request) -> AsyncIterator[Any]:
        if not request.duplex:
            yield "plain"
            return
        link = request.args[-1]
        self.links.append(link)
        try:
            while True:
                await self.reading.wait()
                item = await link.take()
                self.taken += 1
                yield item.upper() if isinstance(item, str) else item
        except EndOfItems:
            return
        finally:
            self.ended.set()


def duplex_request() -> Request:
    return Request(RequestKind.WEBSOCKET, "", ({"type": "websocket"}, False, True), {})


class Items:
    """A BodySource of items the test hands it one by one (``put``), ended by ``end``."""

    def __init__(self) -> None:
        self.started = False
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.read = 0

    async def _items(self) -> AsyncIterator[Any]:
        self.started = True
        while (item := await self.queue.get()) is not None:
            self.read += 1
            yield item

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._items()


def channel(test: Any) -> Any:
    replica = DuplexReplica()
    return over_channel(replica, lambda server, client: test(replica, server, client), WAIT_S)


def test_items_flow_both_ways_on_one_request_in_order_until_the_caller_ends():
    async def test(replica: DuplexReplica, server: ChannelServer, client: ChannelClient) -> None:
        source = Items()
        replies = client.stream(duplex_request(), source)
        got = []
        for i in range(3 * WINDOW_ITEMS):  # several windows' worth: credit flows both ways
            source.queue.put_nowait(f"m{i}")
            got.append(await replies.__anext__())
        source.queue.put_nowait(None)
        got += [item async for item in replies]
        assert got == [f"M{i}" for i in range(3 * WINDOW_ITEMS)]
        await until(lambda: replica.ongoing == 0, "the request's slot freed")

    channel(test)


def test_a_replica_that_stops_taking_holds_the_caller_to_one_window():
    async def test(replica: DuplexReplica, server: ChannelServer, client: ChannelClient) -> None:
        replica.reading.clear()
        source = Items()
        for i in range(10 * WINDOW_ITEMS):
            source.queue.put_nowait(i)
        replies = client.stream(duplex_request(), source)
        first = asyncio.ensure_future(replies.__anext__())
        await until(lambda: replica.links and len(replica.links[0]._queue) == WINDOW_ITEMS, "the window full")
        for _ in range(100):  # turns for any further read to happen, were one allowed
            await asyncio.sleep(0)
        assert len(replica.links[0]._queue) == WINDOW_ITEMS and source.read == WINDOW_ITEMS  # no more was read
        replica.reading.set()
        got = [await first] + [await replies.__anext__() for _ in range(10 * WINDOW_ITEMS - 1)]
        assert got == list(range(10 * WINDOW_ITEMS))
        await replies.aclose()

    channel(test)


def test_a_caller_that_stops_taking_holds_the_replica_to_one_window():
    async def test(replica: DuplexReplica, server: ChannelServer, client: ChannelClient) -> None:
        source = Items()
        for i in range(5 * WINDOW_ITEMS):
            source.queue.put_nowait(i)
        replies = client.stream(duplex_request(), source)
        first = await replies.__anext__()  # then the caller takes nothing more
        await until(lambda: replica.links and not replica.links[0].outbound.has_room, "the replica's window full")
        for _ in range(100):  # turns for any further item to go, were one allowed
            await asyncio.sleep(0)
        assert replica.taken <= 2 * WINDOW_ITEMS + 2  # its own window, the caller's, and the item in hand
        rest = [await replies.__anext__() for _ in range(5 * WINDOW_ITEMS - 1)]
        assert [first] + rest == list(range(5 * WINDOW_ITEMS))
        await replies.aclose()

    channel(test)


def test_closing_the_callers_stream_ends_the_duplex_request_on_the_replica():
    async def test(replica: DuplexReplica, server: ChannelServer, client: ChannelClient) -> None:
        source = Items()
        replies = client.stream(duplex_request(), source)
        source.queue.put_nowait("x")
        assert await replies.__anext__() == "X"
        await replies.aclose()  # CANCEL
        await replica.ended.wait()
        await until(lambda: replica.ongoing == 0 and all(not c._links for c in server._connections), "cleaned up")

    channel(test)


# -- the new frames from a peer that does not follow the rules ------------------------------------------


def hand_written(test: Any) -> Any:
    async def main() -> Any:
        replica = DuplexReplica()
        server = ChannelServer(replica, KEY)
        address = await server.start("127.0.0.1", use_uds=False)
        reader, writer = await asyncio.open_connection(address.host, address.port)
        try:
            writer.write(await proof_frame(reader, writer))
            return await asyncio.wait_for(test(replica, server, reader, writer), WAIT_S)
        finally:
            writer.close()
            server.abort()

    return asyncio.run(main())


async def read_until(reader: asyncio.StreamReader, kind: int) -> tuple[int, int, bytes]:
    while True:
        found = await read_frame(reader)
        if found[0] == kind:
            return found


def test_message_and_credit_frames_for_a_request_that_is_not_duplex_or_not_running_are_ignored():
    async def test(replica: DuplexReplica, server: ChannelServer, reader: Any, writer: Any) -> Awaitable[None]:
        plain = pickle.dumps(Request(RequestKind.STREAM, "m", (), {}).to_wire())
        writer.write(frame(Kind.MESSAGE, 7, pickle.dumps("x")) + frame(Kind.CREDIT, 7, CREDIT.pack(5, 5))
                     + frame(Kind.CALL, 1, plain) + frame(Kind.MESSAGE, 1, pickle.dumps("x"))
                     + frame(Kind.CREDIT, 1, b"junk"))
        kind, rid, payload = await read_until(reader, Kind.CHUNK)
        assert (rid, pickle.loads(payload)) == (1, "plain")
        assert (await read_frame(reader))[0] == Kind.END
        assert replica.links == []

    hand_written(test)


def test_a_caller_that_sends_past_its_window_has_its_request_ended():
    async def test(replica: DuplexReplica, server: ChannelServer, reader: Any, writer: Any) -> None:
        replica.reading.clear()
        writer.write(frame(Kind.CALL, 1, pickle.dumps(duplex_request().to_wire())))
        assert (await read_frame(reader))[:2] == (Kind.ACCEPT, 1)
        writer.write(b"".join(frame(Kind.MESSAGE, 1, pickle.dumps(i)) for i in range(WINDOW_ITEMS + 1)))
        kind, rid, _ = await read_until(reader, Kind.ERR)
        assert rid == 1
        await until(lambda: replica.ongoing == 0, "the request ended")
        assert all(not c._links for c in server._connections)

    hand_written(test)


def test_a_caller_that_overruns_the_windows_bytes_has_its_request_ended():
    async def test(replica: DuplexReplica, server: ChannelServer, reader: Any, writer: Any) -> None:
        replica.reading.clear()
        writer.write(frame(Kind.CALL, 1, pickle.dumps(duplex_request().to_wire())))
        assert (await read_frame(reader))[:2] == (Kind.ACCEPT, 1)
        big = pickle.dumps(b"x" * WINDOW_BYTES)
        writer.write(frame(Kind.MESSAGE, 1, big) + frame(Kind.MESSAGE, 1, pickle.dumps(1)))
        assert (await read_until(reader, Kind.ERR))[1] == 1

    hand_written(test)
