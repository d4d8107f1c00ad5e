"""Frames survive any split of the byte stream, in either direction, whatever their size."""

from __future__ import annotations

import random

import pytest

from channel_peer import receive
from serve_nb.data.channel import Kind
from serve_nb.data.channel.frames import HEADER, IN_PLACE_BYTES, SMALL_WRITE_BYTES, FrameProtocol


class Recorder(FrameProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[tuple[int, int, bytes]] = []

    def on_frame(self, kind: int, rid: int, payload: bytes) -> None:
        self.frames.append((kind, rid, payload))


class Wire:
    """A transport that records what was written."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.data += data
        self.writes += 1

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        self.parts = list(parts)
        for part in parts:
            self.data += part
        self.writes += 1

    def get_extra_info(self, name: str) -> None:
        return None


FRAMES = [
    (Kind.HELLO, 0, b"nonce"),
    (Kind.CALL, 1, b"x" * 100),
    (Kind.CANCEL, 1, b""),
    (Kind.OK, 2**64 - 1, bytes(range(256)) * 3),
    (Kind.END, 7, b""),
]


def encode(frames: list[tuple[int, int, bytes]]) -> bytes:
    return b"".join(HEADER.pack(len(p), k, r) + p for k, r, p in frames)


def feed(data: bytes, cuts: list[int]) -> list[tuple[int, int, bytes]]:
    protocol = Recorder()
    last = 0
    for cut in sorted(cuts) + [len(data)]:
        receive(protocol, data[last:cut])
        last = cut
    return protocol.frames


def test_every_single_split_point_gives_the_same_frames():
    data = encode(FRAMES)
    for cut in range(len(data) + 1):
        assert feed(data, [cut]) == FRAMES, f"split at byte {cut}"


def test_byte_by_byte_and_random_chunking_give_the_same_frames():
    data = encode(FRAMES)
    assert feed(data, list(range(1, len(data)))) == FRAMES
    rng = random.Random(7)
    for _ in range(200):
        cuts = rng.sample(range(1, len(data)), rng.randint(1, 12))
        assert feed(data, cuts) == FRAMES


def test_a_large_payload_arrives_whole_across_many_reads():
    big = bytes(random.Random(1).randbytes(3 * 1024 * 1024 + 17))
    data = encode([(Kind.CHUNK, 5, big), (Kind.END, 5, b"")])
    cuts = list(range(65536, len(data), 65536))
    assert feed(data, cuts) == [(Kind.CHUNK, 5, big), (Kind.END, 5, b"")]


@pytest.mark.parametrize("size", [0, 10, SMALL_WRITE_BYTES - 1, SMALL_WRITE_BYTES, 5 * SMALL_WRITE_BYTES])
def test_send_writes_a_frame_that_parses_back(size):
    sender, wire = Recorder(), Wire()
    sender.connection_made(wire)  # type: ignore[arg-type]
    payload = b"p" * size
    sender.send(Kind.OK, 42, payload)
    assert feed(bytes(wire.data), []) == [(Kind.OK, 42, payload)]
    assert wire.writes == 1


def test_nothing_is_sent_after_the_connection_is_lost():
    sender, wire = Recorder(), Wire()
    sender.connection_made(wire)  # type: ignore[arg-type]
    sender.connection_lost(None)
    sender.send(Kind.OK, 1, b"late")
    assert wire.data == b""


def test_frames_after_close_in_the_same_read_are_not_delivered():
    class ClosesOnFirst(Recorder):
        def on_frame(self, kind: int, rid: int, payload: bytes) -> None:
            super().on_frame(kind, rid, payload)
            self.closed = True

    protocol = ClosesOnFirst()
    receive(protocol, encode(FRAMES))
    assert protocol.frames == FRAMES[:1]


@pytest.mark.parametrize("size", [IN_PLACE_BYTES - 1, IN_PLACE_BYTES, IN_PLACE_BYTES + 1, 5 * IN_PLACE_BYTES])
def test_frames_either_side_of_the_in_place_size_parse_back_however_the_stream_is_cut(size):
    frames = [(Kind.CHUNK, 3, random.Random(size).randbytes(size)), (Kind.OK, 4, b"after"), (Kind.CHUNK, 5, b"y" * size)]
    data = encode(frames)
    rng = random.Random(size)
    for _ in range(20):
        assert feed(data, rng.sample(range(1, len(data)), rng.randint(1, 8))) == frames


def test_a_large_payload_is_read_straight_into_a_buffer_of_exactly_its_size():
    protocol = Recorder()
    payload = bytes(range(256)) * (4 * IN_PLACE_BYTES // 256)
    receive(protocol, HEADER.pack(len(payload), Kind.CHUNK, 9) + payload[:1000])
    rest = protocol.get_buffer(-1)
    assert len(rest) == len(payload) - 1000, "the next read lands in the payload, and nothing after it does"
    rest[:] = payload[1000:]
    protocol.buffer_updated(len(rest))
    assert protocol.frames == [(Kind.CHUNK, 9, payload)] and type(protocol.frames[0][2]) is bytearray
    assert protocol.buffered == 0


def test_before_the_peer_is_trusted_the_read_buffer_stays_small():
    protocol = Recorder()
    protocol.max_frame = 256  # a handshake's limit
    assert len(protocol.get_buffer(-1)) <= 4 * (HEADER.size + 256)


def test_send_frames_writes_every_part_as_it_is_in_one_write():
    sender, wire = Recorder(), Wire()
    sender.connection_made(wire)  # type: ignore[arg-type]
    big = memoryview(b"b" * (2 * SMALL_WRITE_BYTES))
    sender.send_frames([(Kind.CALL_BUFFERS, 1, (b"head", b"pickle")), (Kind.BUFFER, 1, (big,))])
    assert wire.writes == 1 and any(part is big for part in wire.parts), "the large part was not copied"
    assert feed(bytes(wire.data), []) == [(Kind.CALL_BUFFERS, 1, b"headpickle"), (Kind.BUFFER, 1, bytes(big))]
