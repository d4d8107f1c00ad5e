"""A channel peer written by hand, frame by frame, so tests can follow the handshake or break it on purpose."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, TypeVar

from serve_nb.data.channel import Kind, auth
from serve_nb.data.channel.frames import HEADER, FrameProtocol

T = TypeVar("T")

#: A channel key for tests (what ``auth.channel_key`` returns for a replica).
KEY = bytes(range(32))


def frame(kind: int, rid: int = 0, payload: bytes = b"") -> bytes:
    return HEADER.pack(len(payload), kind, rid) + payload


def receive(protocol: FrameProtocol, data: bytes) -> None:
    """What a transport does with ``data`` read from the socket: copy it into the buffers the protocol
    offers, in as many reads as they take."""
    view = memoryview(data)
    while view:
        buffer = protocol.get_buffer(-1)
        n = min(len(buffer), len(view))
        buffer[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    length, kind, rid = HEADER.unpack(await reader.readexactly(HEADER.size))
    return kind, rid, await reader.readexactly(length)


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """True once the other end has closed the connection (whatever it sent before is skipped)."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass
    return True


async def challenge(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client_nonce: bytes | None = None
) -> tuple[bytes, bytes, bytes]:
    """Say HELLO and read the replica's CHALLENGE: (client nonce, server nonce, server proof)."""
    client_nonce = client_nonce if client_nonce is not None else auth.new_nonce()
    writer.write(frame(Kind.HELLO, 0, client_nonce))
    kind, _, payload = await read_frame(reader)
    assert kind == Kind.CHALLENGE, f"expected CHALLENGE, got {Kind(kind).name}"
    return client_nonce, payload[: auth.NONCE_BYTES], payload[auth.NONCE_BYTES :]


async def proof_frame(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: bytes = KEY) -> bytes:
    """Run the handshake up to the caller's PROOF and return that frame unsent, so a test can send
    requests in the same write (as a real caller may)."""
    client_nonce, server_nonce, server_proof = await challenge(reader, writer)
    assert auth.verify(key, auth.Role.SERVER, client_nonce, server_nonce, server_proof)
    return frame(Kind.PROOF, 0, auth.proof(key, auth.Role.CLIENT, client_nonce, server_nonce))


class CountingSlots:
    """The slot bookkeeping of a channel server's RequestHandler, for handlers written in tests: every request
    gets a slot (``ongoing`` counts them) and nothing is large enough to stash. Subclasses write ``handle``."""

    def __init__(self) -> None:
        self.ongoing = 0

    def try_acquire(self) -> bool:
        self.ongoing += 1
        return True

    def release(self) -> None:
        self.ongoing -= 1

    def stash(self, value: object) -> str:  # pragma: no cover - nothing in these tests is large
        raise AssertionError("a test handler was asked to stash a large value")


def over_channel(handler: Any, test: Callable[[Any, Any], Awaitable[T]], wait_s: float = 10.0,
                 **client_options: Any) -> T:
    """Run ``test(server, client)`` against ``handler`` served by a real ChannelServer on 127.0.0.1 (TCP), with a
    ChannelClient made with ``client_options``; both are closed after, and the test is bounded by ``wait_s``."""
    from serve_nb.data.channel import ChannelClient, ChannelServer

    async def main() -> T:
        server = ChannelServer(handler, KEY)
        address = await server.start("127.0.0.1", use_uds=False)
        client = ChannelClient(address, KEY, **client_options)
        try:
            return await asyncio.wait_for(test(server, client), wait_s)
        finally:
            client.close()
            server.abort()

    return asyncio.run(main())
