"""Replica choice: power of two random choices over the caller's own in-flight counts."""

from __future__ import annotations

import random
from typing import Mapping, Sequence


def choose_replica(
    candidates: Sequence[str],
    in_flight: Mapping[str, int],
    capacity: Mapping[str, int],
    rng: random.Random,
    preferred: frozenset[str] = frozenset(),
) -> str | None:
    """Pick the less loaded of two random replicas that still have room; None if all are full.

    ``preferred`` (e.g. replicas on the caller's node) are tried first when any has room.
    """
    available = [r for r in candidates if in_flight.get(r, 0) < capacity.get(r, 1)]
    if not available:
        return None
    if preferred:
        local = [r for r in available if r in preferred]
        if local:
            available = local
    if len(available) == 1:
        return available[0]
    a, b = rng.sample(available, 2)
    load_a, load_b = in_flight.get(a, 0), in_flight.get(b, 0)
    if load_a == load_b:
        return a  # sample order is already random
    return a if load_a < load_b else b
