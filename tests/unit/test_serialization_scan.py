"""Pickling that finds objects of given types anywhere inside a value (not only in containers) and
replaces them on the way out: how bound applications inside user objects become handles."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from serve_nb.common.serialization import dumps_replacing, find_instances
from serve_nb.data.handle import DeploymentResponse
from serve_nb.exceptions import RayServeException


class Marker:
    def __init__(self, tag: str) -> None:
        self.tag = tag


class Holder:
    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


def test_objects_are_found_inside_any_picklable_object_each_once_in_order():
    a, b = Marker("a"), Marker("b")
    value = ([Holder(x=a, nested=Holder(y=b))], {"again": a}, 3)
    assert find_instances(value, (Marker,)) == [a, b]
    assert find_instances(([1], {"k": "v"}), (Marker,)) == []


def test_found_objects_are_not_looked_into():
    inner = Marker("inner")
    outer = Marker("outer")
    outer.child = inner  # type: ignore[attr-defined]
    assert find_instances([outer], (Marker,)) == [outer]


def test_replaced_objects_travel_as_their_replacement_wherever_they_sit():
    a = Marker("a")
    blob = dumps_replacing([Holder(x=a), {"k": a}, 5], lambda o: f"handle-{o.tag}" if isinstance(o, Marker) else None)
    holder, mapping, five = pickle.loads(blob)
    assert (holder.x, mapping["k"], five) == ("handle-a", "handle-a", 5)


def test_a_deployment_response_nested_in_an_argument_is_refused_with_ray_serves_explanation():
    response = DeploymentResponse.__new__(DeploymentResponse)
    with pytest.raises(RayServeException, match=r"`DeploymentResponse` is not serializable.*top level arguments"):
        dumps_replacing([response], lambda o: None)


def test_large_arrays_in_bound_arguments_are_scanned_like_anything_else():
    import numpy as np

    from serve_nb.common.serialization import find_instances

    class Found:
        pass

    big, found = np.ones(1 << 16, dtype=np.float32), Found()  # the array pickles through a PickleBuffer (no len())
    assert find_instances((big, [found, big]), (Found,)) == [found]
