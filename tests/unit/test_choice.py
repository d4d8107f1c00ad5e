"""serve_nb.core.choice.choose_replica: power of two choices with capacity and locality."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from serve_nb.core.choice import Locality, choose_for_model, choose_replica

TRIALS = 3000


def many(candidates, in_flight, capacity, seed=0, preferred=frozenset(), trials=TRIALS, locality=Locality.LOCAL):
    rng = random.Random(seed)
    return Counter(choose_replica(candidates, in_flight, capacity, rng, preferred, locality) for _ in range(trials))


def test_empty_candidates_gives_none():
    assert choose_replica([], {}, {}, random.Random(0)) is None


def test_none_when_all_full():
    candidates = ["a", "b", "c"]
    assert choose_replica(candidates, {"a": 2, "b": 3, "c": 5}, {"a": 2, "b": 3, "c": 5}, random.Random(0)) is None
    # over capacity counts as full too
    assert choose_replica(candidates, {"a": 9, "b": 9, "c": 9}, {"a": 2, "b": 3, "c": 5}, random.Random(0)) is None


def test_missing_capacity_defaults_to_one():
    assert choose_replica(["a"], {"a": 1}, {}, random.Random(0)) is None
    assert choose_replica(["a"], {}, {}, random.Random(0)) == "a"


def test_never_returns_a_full_replica():
    candidates = [f"r{i}" for i in range(6)]
    capacity = {r: 4 for r in candidates}
    in_flight = {"r0": 4, "r1": 4, "r2": 2, "r3": 4, "r4": 2, "r5": 5}
    counts = many(candidates, in_flight, capacity)
    assert set(counts) <= {"r2", "r4"}
    assert counts["r2"] > 0 and counts["r4"] > 0
    assert sum(counts.values()) == TRIALS


def test_only_one_with_room_is_always_chosen():
    counts = many(["a", "b", "c"], {"a": 1, "b": 0, "c": 1}, {"a": 1, "b": 1, "c": 1})
    assert counts == Counter({"b": TRIALS})


def test_of_two_replicas_the_less_loaded_is_always_chosen():
    counts = many(["a", "b"], {"a": 3, "b": 1}, {"a": 10, "b": 10})
    assert counts == Counter({"b": TRIALS})


def test_least_loaded_chosen_much_more_often_and_most_loaded_never():
    candidates = ["r0", "r1", "r2"]
    in_flight = {"r0": 0, "r1": 1, "r2": 2}
    counts = many(candidates, in_flight, {r: 10 for r in candidates}, seed=1234)
    # pairs are {r0,r1},{r0,r2},{r1,r2}: r0 wins 2/3, r1 wins 1/3, r2 (strictly most loaded) never
    assert counts["r2"] == 0
    assert 0.60 < counts["r0"] / TRIALS < 0.73
    assert 0.27 < counts["r1"] / TRIALS < 0.40


def test_least_loaded_among_many():
    candidates = [f"r{i}" for i in range(8)]
    in_flight = {r: 5 for r in candidates}
    in_flight["r3"] = 0
    counts = many(candidates, in_flight, {r: 10 for r in candidates}, seed=7)
    # r3 wins whenever sampled: P = 2/8 = 0.25; every other replica about 0.75/7 ≈ 0.107
    assert 0.20 < counts["r3"] / TRIALS < 0.30
    others = [counts[r] for r in candidates if r != "r3"]
    assert max(others) * 1.8 < counts["r3"]


def test_equal_loads_spread_over_all_replicas():
    candidates = ["a", "b", "c", "d"]
    counts = many(candidates, {}, {r: 5 for r in candidates}, seed=3)
    assert set(counts) == set(candidates)
    assert min(counts.values()) > TRIALS / 4 * 0.8


def test_same_seed_same_choices():
    candidates = [f"r{i}" for i in range(5)]
    in_flight = {"r0": 1, "r1": 2, "r2": 0, "r3": 1, "r4": 3}
    capacity = {r: 5 for r in candidates}
    a, b = random.Random(42), random.Random(42)
    seq_a = [choose_replica(candidates, in_flight, capacity, a) for _ in range(50)]
    seq_b = [choose_replica(candidates, in_flight, capacity, b) for _ in range(50)]
    assert seq_a == seq_b


def test_preferred_set_honoured_when_it_has_room():
    candidates = ["local1", "local2", "remote1", "remote2"]
    in_flight = {"local1": 3, "local2": 2, "remote1": 0, "remote2": 0}  # remotes are idle
    capacity = {r: 5 for r in candidates}
    counts = many(candidates, in_flight, capacity, preferred=frozenset({"local1", "local2"}))
    assert set(counts) == {"local2"}  # only locals, and the less loaded of the two


def test_single_preferred_with_room_always_chosen():
    candidates = ["a", "b", "c"]
    counts = many(candidates, {"a": 4, "b": 0, "c": 0}, {r: 5 for r in candidates}, preferred=frozenset({"a"}))
    assert counts == Counter({"a": TRIALS})


def test_preferred_full_falls_back_to_others():
    candidates = ["local", "remote1", "remote2"]
    in_flight = {"local": 2, "remote1": 1, "remote2": 0}
    capacity = {"local": 2, "remote1": 5, "remote2": 5}
    counts = many(candidates, in_flight, capacity, preferred=frozenset({"local"}))
    assert counts == Counter({"remote2": TRIALS})


def test_preferred_not_among_candidates_is_ignored():
    counts = many(["a", "b"], {"a": 0, "b": 1}, {"a": 2, "b": 2}, preferred=frozenset({"zzz"}))
    assert counts == Counter({"a": TRIALS})


@pytest.mark.parametrize("seed", range(5))
def test_choice_is_always_a_candidate(seed):
    candidates = ["x", "y", "z"]
    counts = many(candidates, {"x": 1}, {"x": 2, "y": 2, "z": 2}, seed=seed, trials=200)
    assert set(counts) <= set(candidates)
    assert None not in counts


# --------------------------------------------------------------------------- multiplexed models


def test_a_replica_holding_the_model_is_chosen_over_a_less_loaded_one():
    models = {"a": frozenset({"m1"}), "b": frozenset()}
    picks = {choose_for_model(["a", "b"], {"a": 3, "b": 0}, {"a": 4, "b": 4}, random.Random(s), models, "m1")
             for s in range(50)}
    assert picks == {"a"}


def test_without_a_holder_the_replica_with_the_fewest_models_loads_it():
    models = {"a": frozenset({"m1", "m2"}), "b": frozenset({"m3"}), "c": frozenset({"m4", "m5"})}
    picks = {choose_for_model(["a", "b", "c"], {}, {"a": 4, "b": 4, "c": 4}, random.Random(s), models, "m9")
             for s in range(50)}
    assert picks == {"b"}


def test_with_every_holder_full_the_model_goes_to_another_replica_instead_of_waiting():
    models = {"a": frozenset({"m1"}), "b": frozenset({"m2"}), "c": frozenset()}
    pick = choose_for_model(["a", "b", "c"], {"a": 2}, {"a": 2, "b": 2, "c": 2}, random.Random(0), models, "m1")
    assert pick == "c"  # the full holder is skipped; of the others, the one holding fewest models


def test_among_several_holders_load_decides():
    models = {"a": frozenset({"m1"}), "b": frozenset({"m1"}), "c": frozenset()}
    picks = Counter(choose_for_model(["a", "b", "c"], {"a": 3, "b": 0}, {"a": 9, "b": 9, "c": 9}, random.Random(s),
                                     models, "m1") for s in range(200))
    assert set(picks) == {"b"}  # two holders: the less loaded always wins a two-way draw


def test_a_model_request_with_every_replica_full_waits():
    models = {"a": frozenset({"m1"})}
    assert choose_for_model(["a", "b"], {"a": 1, "b": 1}, {"a": 1, "b": 1}, random.Random(0), models, "m1") is None
