"""Replica choice: power of two random choices over the caller's own in-flight counts, preferring the
replicas that hold the request's multiplexed model."""

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
    available = _with_room(candidates, in_flight, capacity)
    if not available:
        return None
    return _two_choices(available, in_flight, rng, preferred)


def choose_for_model(
    candidates: Sequence[str],
    in_flight: Mapping[str, int],
    capacity: Mapping[str, int],
    rng: random.Random,
    models: Mapping[str, frozenset[str]],
    model_id: str,
    preferred: frozenset[str] = frozenset(),
) -> str | None:
    """Pick a replica for a request of multiplexed model ``model_id``; None if all are full.

    A replica holding (or loading) the model, if one has room: loading a model costs far more than waiting
    behind a few requests, and choosing by load alone would load every model everywhere in turn. Else the
    replica holding the fewest models (then the least loaded): the model is loaded once, where it evicts
    the least. So when every holder is saturated the model is loaded on a second replica, not queued.
    """
    available = _with_room(candidates, in_flight, capacity)
    if not available:
        return None
    holders = [r for r in available if model_id in models.get(r, ())]
    if holders:
        return _two_choices(holders, in_flight, rng, preferred)
    fewest = min(len(models.get(r, ())) for r in available)
    emptiest = [r for r in available if len(models.get(r, ())) == fewest]
    return _two_choices(emptiest, in_flight, rng, preferred)


def _with_room(candidates: Sequence[str], in_flight: Mapping[str, int], capacity: Mapping[str, int]) -> list[str]:
    return [r for r in candidates if in_flight.get(r, 0) < capacity.get(r, 1)]


def _two_choices(available: list[str], in_flight: Mapping[str, int], rng: random.Random,
                 preferred: frozenset[str]) -> str:
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
