"""Which payloads leave the channel for Ray's object store, decided without copying large buffers."""

from __future__ import annotations

import pickle

import numpy as np

from serve_nb.common.serialization import LARGE_PAYLOAD_BYTES, dumps_unless_large


def test_small_payloads_are_pickled_whole_as_usual():
    value = ({"x": [1, 2, 3]}, np.arange(10, dtype=np.float32), b"abc")
    payload = dumps_unless_large(value)
    assert payload is not None
    again = pickle.loads(payload)
    assert again[0] == value[0] and again[2] == b"abc" and np.array_equal(again[1], value[1])


def test_a_large_array_anywhere_in_the_payload_is_large():
    assert dumps_unless_large(((np.zeros(LARGE_PAYLOAD_BYTES // 4, dtype=np.float32),), {})) is None
    assert dumps_unless_large(((), {"batch": [np.zeros(LARGE_PAYLOAD_BYTES, dtype=np.uint8)]})) is None


def test_many_medium_buffers_add_up_to_large():
    count = 4
    parts = [np.ones(LARGE_PAYLOAD_BYTES // count, dtype=np.uint8) for _ in range(count)]
    assert dumps_unless_large(parts) is None
    assert dumps_unless_large(parts[:2]) is not None


def test_medium_buffers_under_the_threshold_come_back_in_one_self_contained_pickle():
    parts = [np.full(200_000, i, dtype=np.uint8) for i in range(3)]  # counted out of band, then pickled whole
    payload = dumps_unless_large(parts)
    assert payload is not None
    assert [int(p[0]) for p in pickle.loads(payload)] == [0, 1, 2]  # no buffers needed to read it


def test_large_plain_bytes_are_large_too():
    assert dumps_unless_large(b"x" * LARGE_PAYLOAD_BYTES) is None
    assert dumps_unless_large(b"x" * (LARGE_PAYLOAD_BYTES // 2)) is not None


def test_the_limit_can_be_given():
    assert dumps_unless_large(b"x" * 100, limit=50) is None
    assert dumps_unless_large(b"x" * 10, limit=50) is not None
