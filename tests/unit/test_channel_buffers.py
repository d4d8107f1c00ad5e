"""Large read-only buffers leave the pickle and travel as frames of their own; the replica puts the
request back together and refuses what was not announced (no sockets: the frames are handled by hand)."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from serve_nb.data.channel import FrameTooLargeError, Kind
from serve_nb.data.channel.buffers import OUT_OF_BAND_BYTES, PIECE_BYTES, Assembly, Pieces, dump, frames

LIMIT = 64 * 2**20


def deliver(obj: Any, limit: int = LIMIT) -> Any:
    """``obj`` sent as ``dump`` and ``frames`` send it, and put together as the replica does."""
    pickled, out_of_band = dump(obj)
    if not out_of_band:
        return pickle.loads(pickled)
    (kind, _, head), *rest = frames(7, pickled, out_of_band)
    assert kind == Kind.CALL_BUFFERS and all(k == Kind.BUFFER for k, _, _ in rest)
    assembly = Assembly(b"".join(head), limit)
    for _, _, (buffer,) in rest:
        assembly.add(bytes(buffer))  # a frame's payload, as the replica reads it
    assert assembly.complete
    return assembly.value()


def body(size: int, seed: int = 0) -> bytes:
    return bytes((seed + i) % 251 for i in range(size))


def test_a_large_body_leaves_the_pickle_uncopied_and_arrives_as_pieces_of_at_most_a_frame():
    parts = [body(3 * PIECE_BYTES + 100, 1), body(OUT_OF_BAND_BYTES + 5, 2)]
    sent = Pieces(parts, sum(map(len, parts)))
    pickled, out_of_band = dump(("scope", sent))
    assert len(pickled) < 2048, "the body is not in the pickle"
    assert all(view.obj.obj is parts[0] for view in out_of_band[:3]), "views of the caller's own bytes"
    _, received = deliver(("scope", sent))
    assert isinstance(received, Pieces) and bytes(received) == b"".join(parts) and len(received) == len(sent)
    assert all(type(p) is bytes and len(p) <= PIECE_BYTES for p in received.pieces)


def test_small_and_writable_buffers_stay_in_the_pickle():
    assert dump(Pieces([body(OUT_OF_BAND_BYTES - 1)], OUT_OF_BAND_BYTES - 1))[1] == []
    writable = pickle.PickleBuffer(bytearray(body(4 * OUT_OF_BAND_BYTES)))
    pickled, out_of_band = dump(writable)
    assert out_of_band == [] and pickle.loads(pickled) == bytearray(body(4 * OUT_OF_BAND_BYTES))


def test_pieces_pickle_whole_with_any_pickler_and_protocol():
    sent = Pieces([b"ab", body(2 * PIECE_BYTES)], 2 + 2 * PIECE_BYTES)
    for protocol in (2, 4, 5):
        received = pickle.loads(pickle.dumps(sent, protocol=protocol))
        assert isinstance(received, Pieces) and bytes(received) == bytes(sent)


def test_an_announced_size_over_the_limit_is_refused_before_any_buffer_arrives():
    pickled, out_of_band = dump(Pieces([body(PIECE_BYTES)], PIECE_BYTES))
    (_, _, head), *_ = frames(1, pickled, out_of_band)
    with pytest.raises(FrameTooLargeError, match="request is"):
        Assembly(b"".join(head), limit=PIECE_BYTES)


@pytest.mark.parametrize("extra", [b"x", b""])
def test_buffers_beyond_or_other_than_those_announced_are_refused(extra):
    pickled, out_of_band = dump(Pieces([body(OUT_OF_BAND_BYTES)], OUT_OF_BAND_BYTES))
    (_, _, head), *_ = frames(1, pickled, out_of_band)
    assembly = Assembly(b"".join(head), LIMIT)
    with pytest.raises(ValueError, match="not what it announced"):
        assembly.add(bytes(out_of_band[0]) + extra if extra else extra)


def test_a_frame_too_short_to_announce_its_buffers_is_refused():
    with pytest.raises(ValueError, match="too short"):
        Assembly(b"\x00\x01", LIMIT)


def test_pieces_of_shared_memory_arrive_as_one_bytes_and_socket_pieces_stay_apart():
    from serve_nb.data.channel.buffers import unpickled_pieces

    mapped = bytearray(b"abcdef")
    joined = unpickled_pieces(memoryview(mapped)[:3], memoryview(mapped)[3:])
    mapped[:] = b"zzzzzz"  # the segment is reused: what the app got must not change
    assert joined.pieces == [b"abcdef"] and type(joined.pieces[0]) is bytes and len(joined) == 6
    apart = unpickled_pieces(b"ab", b"cd")
    assert apart.pieces == [b"ab", b"cd"] and len(apart) == 4
