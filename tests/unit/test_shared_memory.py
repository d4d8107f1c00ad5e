"""Large arguments through shared memory (no Ray): copied once by the caller, read in place by the replica,
reused only after the replica released them, and refused when a caller names memory it should not."""

from __future__ import annotations

import gc
import os
import pickle

import numpy as np
import pytest

from serve_nb.data.channel import buffers, shm
from serve_nb.data.channel.buffers import Pieces

pytestmark = pytest.mark.skipif(not shm.available(), reason="no /dev/shm on this machine")


@pytest.fixture
def arena():
    made = shm.ShmArena(max_bytes=64 * 1024 * 1024)
    yield made
    made.close()


def files_of_this_process() -> set[str]:
    return {n for n in os.listdir(shm.SHM_DIR) if n.startswith(f"serve_nb-{os.getuid()}-{os.getpid()}-")}


def test_arrays_arrive_equal_and_read_only_without_a_copy(arena):
    arrays = (np.arange(300_000, dtype=np.float32), np.asfortranarray(np.ones((300, 400))))
    call = arena.encode((arrays, {"label": "x"}))
    assert call is not None and len(call.inband) < 2_000  # the data is not in the pickle
    released: list[str] = []
    (got, meta) = shm.decode(pickle.loads(pickle.dumps(call)), released.append)
    assert meta == {"label": "x"}
    assert all(np.array_equal(a, b) for a, b in zip(got, arrays)) and got[1].flags.f_contiguous
    assert not any(a.flags.writeable for a in got)  # as from Ray's object store
    assert released == []  # still in use
    del got
    gc.collect()
    assert released == [call.segment]


def test_a_segment_is_reused_only_after_its_release(arena):
    first = arena.encode(np.zeros(200_000))
    second = arena.encode(np.zeros(200_000))
    assert first.segment != second.segment  # the first is still out
    arena.release(first.segment)
    third = arena.encode(np.ones(200_000))
    assert third.segment == first.segment
    assert np.array_equal(shm.decode(third, lambda _: None), np.ones(200_000))  # the new data, not the old


def test_an_abandoned_segment_is_unlinked_and_never_reused(arena):
    call = arena.encode(np.zeros(200_000))
    arena.abandon(call.segment)
    assert call.segment not in files_of_this_process()
    assert arena.encode(np.zeros(200_000)).segment != call.segment


def test_a_full_arena_says_so_instead_of_growing(arena):
    calls = [arena.encode(np.zeros(4 * 1024 * 1024 // 8)) for _ in range(16)]  # 16 segments of 4 MiB = 64 MiB
    assert all(c is not None for c in calls)
    assert arena.encode(np.zeros(1000)) is None
    arena.release(calls[0].segment)
    assert arena.encode(np.zeros(1000)) is not None


def test_closing_the_arena_removes_its_files(arena):
    for _ in range(3):
        arena.encode(np.zeros(100_000))
    assert len(files_of_this_process()) >= 3
    arena.close()
    assert files_of_this_process() == set()


def test_nothing_to_share_gives_none(arena):
    assert arena.encode({"small": [1, 2, 3]}) is None
    assert arena.encode(b"x" * 1_000_000) is None  # bytes are pickled in band: nothing to place in a segment


@pytest.mark.parametrize("name", ["../etc/passwd", "serve_nb-0-1", "other-file", f"serve_nb-{os.getuid() + 1}-1-1"])
def test_a_replica_maps_only_serve_nb_segments_of_its_own_user(name):
    with pytest.raises(shm.BadShmCall):
        shm.decode(shm.ShmCall(pickle.dumps(None), name, ()), lambda _: None)


def test_buffers_outside_the_segment_are_refused(arena):
    call = arena.encode(np.zeros(200_000))
    beyond = shm.ShmCall(call.inband, call.segment, ((0, 100 * 1024 * 1024),))
    with pytest.raises(shm.BadShmCall, match="outside"):
        shm.decode(beyond, lambda _: None)


def test_segments_left_by_a_dead_process_are_removed():
    dead_pid = 2**22 - 3  # above the usual pid_max: no such process
    path = os.path.join(shm.SHM_DIR, f"serve_nb-{os.getuid()}-{dead_pid}-1")
    with open(path, "wb") as f:
        f.write(b"x")
    shm.remove_orphans()
    assert not os.path.exists(path)


def test_a_body_read_whole_arrives_as_the_one_bytes_it_was_and_frees_its_segment_at_once(arena):
    chunks = [bytes([i]) * (300 * 1024) for i in range(4)]  # as uvicorn hands a body over: several pieces
    pickled, views = buffers.dump(Pieces(chunks, sum(map(len, chunks))))
    call = arena.place(pickled, views, read_whole=True)
    released: list[str] = []
    body = shm.decode(pickle.loads(pickle.dumps(call)), released.append)
    assert released == [call.segment], "copied out at once: the caller may reuse the segment"
    assert isinstance(body, Pieces) and len(body.pieces) == 1 and type(body.pieces[0]) is bytes
    assert body.pieces[0] == b"".join(chunks)


def test_a_read_whole_call_whose_buffers_are_not_end_to_end_is_refused(arena):
    call = arena.place(b"", [memoryview(b"x" * 200_000)], read_whole=True)
    overlapping = shm.ShmCall(call.inband, call.segment, ((0, 100_000), (0, 100_000)), read_whole=True)
    with pytest.raises(shm.BadShmCall, match="end to end"):
        shm.decode(overlapping, lambda _: None)


def _body_call(arena, body: bytes):
    pickled, views = buffers.dump(Pieces([body], len(body)))
    return arena.place(pickled, views, read_whole=True)


def _read_body(call) -> bytes:
    released: list[str] = []
    got = shm.decode(pickle.loads(pickle.dumps(call)), released.append)
    assert released == [call.segment]
    return got.pieces[0]


def test_a_reused_segment_carries_each_new_body_not_the_one_read_before(arena):
    first = _body_call(arena, b"a" * 300_000)
    assert _read_body(first) == b"a" * 300_000
    arena.release(first.segment)
    second = _body_call(arena, b"b" * 250_000)
    assert second.segment == first.segment  # pooled: the replica's kept mapping is read again
    assert _read_body(second) == b"b" * 250_000


def test_a_segment_name_that_now_names_another_file_is_read_from_that_file(arena):
    call = _body_call(arena, b"a" * 300_000)
    assert _read_body(call) == b"a" * 300_000
    path = os.path.join(shm.SHM_DIR, call.segment)
    os.unlink(path)  # the caller went and another file took the name: the old mapping must not be used
    with open(path, "wb") as f:
        f.write(b"z" * 300_000)
    try:
        assert _read_body(call) == b"z" * 300_000
    finally:
        os.unlink(path)


def test_a_read_whole_call_naming_a_symlink_is_refused(tmp_path):
    target = tmp_path / "secret"
    target.write_bytes(b"s" * 200_000)
    name = f"serve_nb-{os.getuid()}-{os.getpid()}-999999"
    link = os.path.join(shm.SHM_DIR, name)
    os.symlink(target, link)
    try:
        call = shm.ShmCall(b"", name, ((0, 200_000),), read_whole=True)
        with pytest.raises(shm.BadShmCall, match="cannot be opened"):
            shm.decode(call, lambda _: None)
    finally:
        os.unlink(link)


def test_kept_read_mappings_stay_within_their_byte_bound(tmp_path):
    maps = shm._ReadMaps(max_bytes=3 * 100_000)
    for i in range(5):
        path = tmp_path / f"seg{i}"
        path.write_bytes(bytes([i]) * 100_000)
        assert maps.mapping(f"seg{i}", str(path), 100_000)[:3] == bytes([i]) * 3
    assert maps._bytes <= 3 * 100_000 and list(maps._maps) == ["seg2", "seg3", "seg4"]  # the oldest dropped
