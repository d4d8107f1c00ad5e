"""Replica choice: power of two random choices over the caller's own in-flight counts, preferring the
replicas that hold the request's multiplexed model, and (per ``Locality``) replicas on the caller's node."""

from __future__ import annotations

import os
import random
from enum import Enum
from typing import Mapping, Sequence

#: Environment variable choosing the ``Locality`` of every router in a process (driver, proxy, replica).
LOCALITY_ENV = "SERVE_NB_ROUTING_LOCALITY"


class Locality(Enum):
    """How much a router favours replicas on its own node (``preferred``) over the others."""

    #: Two random choices over all replicas; at equal load the one on this node wins. Idle replicas
    #: elsewhere take their share, and a local replica is never chosen over a less loaded remote one.
    BALANCED = "balanced"
    #: Replicas on this node only, while any has room; others only when all of them are full. Saves the
    #: network hop, at the price of idle replicas elsewhere (Ray Serve's proxies route this way).
    LOCAL = "local"
    #: Locality ignored: two random choices over all replicas.
    ANY = "any"


DEFAULT_LOCALITY = Locality.BALANCED


def locality_from_env(environ: Mapping[str, str] = os.environ) -> Locality:
    """The locality set by ``SERVE_NB_ROUTING_LOCALITY`` (case-insensitive), else ``DEFAULT_LOCALITY``."""
    raw = environ.get(LOCALITY_ENV, "").strip().lower()
    if not raw:
        return DEFAULT_LOCALITY
    try:
        return Locality(raw)
    except ValueError:
        names = ", ".join(repr(m.value) for m in Locality)
        raise ValueError(f"{LOCALITY_ENV}={environ[LOCALITY_ENV]!r} is not a routing locality; use one of {names} "
                         f"(default {DEFAULT_LOCALITY.value!r}).") from None


def choose_replica(
    candidates: Sequence[str],
    in_flight: Mapping[str, int],
    capacity: Mapping[str, int],
    rng: random.Random,
    preferred: frozenset[str] = frozenset(),
    locality: Locality = DEFAULT_LOCALITY,
) -> str | None:
    """Pick the less loaded of two random replicas that still have room; None if all are full.

    ``preferred`` are the replicas on the caller's node, favoured as ``locality`` says.
    """
    available = _with_room(candidates, in_flight, capacity)
    if not available:
        return None
    return _two_choices(available, in_flight, rng, preferred, locality)


def choose_for_model(
    candidates: Sequence[str],
    in_flight: Mapping[str, int],
    capacity: Mapping[str, int],
    rng: random.Random,
    models: Mapping[str, frozenset[str]],
    model_id: str,
    preferred: frozenset[str] = frozenset(),
    locality: Locality = DEFAULT_LOCALITY,
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
        return _two_choices(holders, in_flight, rng, preferred, locality)
    fewest = min(len(models.get(r, ())) for r in available)
    emptiest = [r for r in available if len(models.get(r, ())) == fewest]
    return _two_choices(emptiest, in_flight, rng, preferred, locality)


def _with_room(candidates: Sequence[str], in_flight: Mapping[str, int], capacity: Mapping[str, int]) -> list[str]:
    return [r for r in candidates if in_flight.get(r, 0) < capacity.get(r, 1)]


def _two_choices(available: list[str], in_flight: Mapping[str, int], rng: random.Random,
                 preferred: frozenset[str], locality: Locality) -> str:
    if preferred and locality is Locality.LOCAL:
        local = [r for r in available if r in preferred]
        if local:
            available = local
    if len(available) == 1:
        return available[0]
    a, b = rng.sample(available, 2)
    load_a, load_b = in_flight.get(a, 0), in_flight.get(b, 0)
    if load_a == load_b:
        if locality is Locality.BALANCED and b in preferred and a not in preferred:
            return b  # the locality bonus: worth less than one request in flight
        return a  # sample order is already random
    return a if load_a < load_b else b
