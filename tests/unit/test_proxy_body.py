"""How the proxy reads request bodies: small ones whole, large ones as a head plus a stream, limits and
disconnects noticed while reading (plain asyncio, no server)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from serve_nb.data.channel.buffers import OUT_OF_BAND_BYTES, Pieces
from serve_nb.data.http.body import BodyTooLarge, ClientBody, ClientGone, read_head, watch_client


def client(*pieces: bytes, disconnect: bool = False, leave_after: bool = False) -> Any:
    """An ASGI ``receive`` sending ``pieces`` as one body; ``disconnect``: the client leaves before the body
    ends; ``leave_after``: it leaves after sending the whole body."""
    messages = [{"type": "http.request", "body": p, "more_body": i < len(pieces) - 1} for i, p in enumerate(pieces)]
    if disconnect:
        messages[-1]["more_body"] = True
    if disconnect or leave_after:
        messages.append({"type": "http.disconnect"})
    queue = list(messages)

    async def receive() -> dict:
        return queue.pop(0) if queue else await asyncio.Event().wait()  # type: ignore[return-value]

    return receive


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_body_that_ends_within_the_inline_size_is_read_whole():
    head = run(read_head(client(b"ab", b"cd"), limit=None, inline=10))
    assert (bytes(head.data), head.more) == (b"abcd", False)
    single = run(read_head(client(b"whole"), limit=None, inline=10))
    assert single.data == b"whole" and type(single.data) is bytes, "one message is passed on as it came"


def test_a_body_of_exactly_the_inline_size_goes_inline_when_its_end_comes_alone():
    head = run(read_head(client(b"x" * 5, b"y" * 5, b""), limit=None, inline=10))  # a chunked upload's end
    assert (bytes(head.data), head.more) == (b"x" * 5 + b"y" * 5, False)
    assert run(read_head(client(b"x" * 5, b"y" * 5, b"z", b"w"), limit=None, inline=10)).more, "a byte more streams"


def test_a_large_head_is_kept_as_the_pieces_read_never_joined():
    pieces = [b"a" * OUT_OF_BAND_BYTES, b"b" * 10, b"c" * OUT_OF_BAND_BYTES]
    head = run(read_head(client(*pieces), limit=None, inline=10 * OUT_OF_BAND_BYTES))
    assert isinstance(head.data, Pieces) and not head.more
    assert all(kept is sent for kept, sent in zip(head.data.pieces, pieces)) and len(head.data) == sum(map(len, pieces))


def test_a_longer_body_stops_after_the_inline_size_and_the_rest_streams():
    async def scenario() -> tuple[bytes, list[bytes], Any]:
        receive = client(b"a" * 6, b"b" * 6, b"c" * 6, b"d" * 6)
        head = await read_head(receive, limit=None, inline=10)
        assert head.more
        rest = ClientBody(receive, len(head.data), limit=None)
        pieces = [p async for p in rest]
        return bytes(head.data), pieces, await rest.outcome

    head, pieces, outcome = run(scenario())
    assert head == b"a" * 6 + b"b" * 6 and pieces == [b"c" * 6, b"d" * 6] and outcome is None


def test_the_limit_holds_for_the_head_and_for_the_streamed_rest():
    with pytest.raises(BodyTooLarge):
        run(read_head(client(b"x" * 8, b"x" * 8), limit=12, inline=100))

    async def scenario() -> Any:
        receive = client(b"x" * 8, b"x" * 8, b"x" * 8)
        head = await read_head(receive, limit=20, inline=7)
        rest = ClientBody(receive, len(head.data), limit=20)
        watch = asyncio.ensure_future(watch_client(receive, rest))
        with pytest.raises(BodyTooLarge):
            async for _ in rest:
                pass
        return await watch

    assert isinstance(run(scenario()), BodyTooLarge), "the proxy learns why the body stopped"


def test_a_client_leaving_mid_body_is_noticed():
    assert run(read_head(client(b"x" * 4, disconnect=True), limit=None, inline=100)) is None

    async def scenario() -> Any:
        receive = client(b"x" * 8, b"y" * 8, disconnect=True)
        head = await read_head(receive, limit=None, inline=7)
        rest = ClientBody(receive, len(head.data), limit=None)
        with pytest.raises(ClientGone):
            async for _ in rest:
                pass
        return await watch_client(receive, rest)

    assert isinstance(run(scenario()), ClientGone)


def test_after_a_complete_body_the_watch_waits_for_a_disconnect():
    async def scenario() -> Any:
        receive = client(b"x" * 8, b"y" * 8, leave_after=True)
        head = await read_head(receive, limit=None, inline=7)
        rest = ClientBody(receive, len(head.data), limit=None)
        watch = asyncio.ensure_future(watch_client(receive, rest))
        await asyncio.sleep(0)
        assert not watch.done(), "nothing else reads from the client while the body streams"
        assert [p async for p in rest] == [b"y" * 8]
        return await watch

    assert run(scenario()) == {"type": "http.disconnect"}
