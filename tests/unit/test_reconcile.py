"""serve_nb.core.reconcile.plan: starts, stops, reconfigures, and rolling updates."""

from __future__ import annotations

import pytest

from serve_nb.core.reconcile import Goal, ReconfigureReplica, ReplicaView, StartReplicas, StopReplica, plan
from serve_nb.types import ReplicaState

RUNNING, STARTING, UPDATING, STOPPING = (
    ReplicaState.RUNNING,
    ReplicaState.STARTING,
    ReplicaState.UPDATING,
    ReplicaState.STOPPING,
)


def rv(rid, state=RUNNING, version="v1", config="c1", t=0.0):
    return ReplicaView(rid, version, config, state, t)


def starts(actions):
    return sum(a.count for a in actions if isinstance(a, StartReplicas))


def stops(actions):
    return [a.replica_id for a in actions if isinstance(a, StopReplica)]


def reconfigs(actions):
    return [a.replica_id for a in actions if isinstance(a, ReconfigureReplica)]


# --------------------------------------------------------------------------- steady state and scaling


def test_fresh_start():
    assert plan(Goal("v1", "c1", 3), []) == [StartReplicas(3)]


def test_nothing_to_do_when_settled():
    replicas = [rv("a"), rv("b")]
    assert plan(Goal("v1", "c1", 2), replicas) == []


def test_starting_replicas_count_towards_target():
    assert plan(Goal("v1", "c1", 3), [rv("a"), rv("b", STARTING)]) == [StartReplicas(1)]
    assert plan(Goal("v1", "c1", 2), [rv("a"), rv("b", STARTING)]) == []


def test_scale_up():
    assert plan(Goal("v1", "c1", 5), [rv("a"), rv("b")]) == [StartReplicas(3)]


def test_scale_down_stops_newest_running():
    replicas = [rv("old", t=1), rv("mid", t=2), rv("new", t=3)]
    assert plan(Goal("v1", "c1", 1), replicas) == [StopReplica("new"), StopReplica("mid")]


def test_scale_down_stops_starting_before_updating_before_running():
    replicas = [
        rv("run_new", RUNNING, t=10),
        rv("upd", UPDATING, t=1),
        rv("start_old", STARTING, t=0),
        rv("run_old", RUNNING, t=0),
    ]
    assert stops(plan(Goal("v1", "c1", 3), replicas)) == ["start_old"]
    assert stops(plan(Goal("v1", "c1", 2), replicas)) == ["start_old", "upd"]
    assert stops(plan(Goal("v1", "c1", 1), replicas)) == ["start_old", "upd", "run_new"]
    assert starts(plan(Goal("v1", "c1", 1), replicas)) == 0


def test_target_zero_stops_all():
    replicas = [rv("a"), rv("b", STARTING), rv("c", UPDATING), rv("old", version="v0")]
    actions = plan(Goal("v1", "c1", 0), replicas)
    assert sorted(stops(actions)) == ["a", "b", "c", "old"]
    assert starts(actions) == 0
    assert reconfigs(actions) == []


def test_target_zero_with_nothing_running_is_a_no_op():
    assert plan(Goal("v1", "c1", 0), []) == []


def test_stopping_replicas_are_ignored():
    replicas = [rv("a"), rv("gone1", STOPPING), rv("gone2", STOPPING, version="v0", config="c0")]
    # not counted toward the target, not stopped again, not reconfigured
    assert plan(Goal("v1", "c1", 2), replicas) == [StartReplicas(1)]
    assert plan(Goal("v1", "c2", 1), replicas) == [ReconfigureReplica("a")]
    assert plan(Goal("v1", "c1", 0), replicas) == [StopReplica("a")]


# --------------------------------------------------------------------------- reconfigure


def test_reconfigure_when_config_version_differs():
    replicas = [rv("a", config="c1"), rv("b", config="c1")]
    actions = plan(Goal("v1", "c2", 2), replicas)
    assert sorted(reconfigs(actions)) == ["a", "b"]
    assert stops(actions) == [] and starts(actions) == 0


def test_reconfigure_only_running_replicas_with_stale_config():
    replicas = [
        rv("stale", config="c1"),
        rv("fresh", config="c2"),
        rv("starting", STARTING, config="c1"),  # gets its config when it initializes
        rv("updating", UPDATING, config="c1"),  # already being reconfigured
    ]
    actions = plan(Goal("v1", "c2", 4), replicas)
    assert reconfigs(actions) == ["stale"]
    assert stops(actions) == [] and starts(actions) == 0


def test_old_version_replicas_are_not_reconfigured():
    actions = plan(Goal("v2", "c2", 1), [rv("old", version="v1", config="c1")])
    assert reconfigs(actions) == []
    assert actions == [StartReplicas(1)]


# --------------------------------------------------------------------------- rolling update


def test_rolling_update_starts_new_first_and_keeps_old_serving():
    old = [rv("o1", t=1), rv("o2", t=2), rv("o3", t=3)]
    assert plan(Goal("v2", "c1", 3), old) == [StartReplicas(3)]


def test_rolling_update_old_stopped_only_as_new_become_running():
    old = [rv("o1", t=1), rv("o2", t=2), rv("o3", t=3)]
    new_starting = [rv(f"n{i}", STARTING, version="v2", t=10 + i) for i in range(3)]
    assert plan(Goal("v2", "c1", 3), old + new_starting) == []

    one_running = [rv("n0", RUNNING, version="v2", t=10)] + new_starting[1:]
    assert plan(Goal("v2", "c1", 3), old + one_running) == [StopReplica("o1")]  # oldest first

    two_running = [rv("n0", version="v2", t=10), rv("n1", version="v2", t=11), new_starting[2]]
    assert stops(plan(Goal("v2", "c1", 3), old + two_running)) == ["o1", "o2"]


def test_rolling_update_old_starting_replicas_stopped_at_once():
    replicas = [rv("o_run", t=1), rv("o_start", STARTING, t=2)]
    actions = plan(Goal("v2", "c1", 2), replicas)
    assert stops(actions) == ["o_start"]
    assert starts(actions) == 2


def test_rolling_update_with_smaller_target_keeps_enough_old():
    old = [rv("o1", t=1), rv("o2", t=2), rv("o3", t=3)]
    actions = plan(Goal("v2", "c1", 1), old)
    assert starts(actions) == 1
    assert stops(actions) == ["o1", "o2"]  # one old replica keeps serving until the new one runs


def test_updating_new_replicas_count_as_serving():
    replicas = [rv("o1", t=1), rv("n1", UPDATING, version="v2", config="c0", t=5)]
    assert plan(Goal("v2", "c1", 1), replicas) == [StopReplica("o1")]


def _simulate_rolling_update(target, n_old, new_target=None):
    """Apply plans step by step, promoting one STARTING replica per step; check serving never drops."""
    new_target = target if new_target is None else new_target
    replicas = {f"o{i}": rv(f"o{i}", version="v1", t=i) for i in range(n_old)}
    goal = Goal("v2", "c1", new_target)
    clock = 100.0
    floor = min(n_old, new_target)
    for _step in range(50):
        for action in plan(goal, list(replicas.values())):
            if isinstance(action, StartReplicas):
                for _ in range(action.count):
                    clock += 1
                    rid = f"n{int(clock)}"
                    replicas[rid] = rv(rid, STARTING, version="v2", t=clock)
            elif isinstance(action, StopReplica):
                assert replicas[action.replica_id].state != STOPPING
                del replicas[action.replica_id]
            else:
                pytest.fail(f"unexpected action {action}")
        serving = [r for r in replicas.values() if r.state in (RUNNING, UPDATING)]
        assert len(serving) >= floor, f"serving dropped to {len(serving)} < {floor}: {replicas}"
        starting = sorted((r for r in replicas.values() if r.state == STARTING), key=lambda r: r.started_at)
        if not starting:
            break
        first = starting[0]
        replicas[first.replica_id] = rv(first.replica_id, RUNNING, version="v2", t=first.started_at)
    else:
        pytest.fail("rolling update did not converge")
    assert plan(goal, list(replicas.values())) == []
    assert sorted(r.version for r in replicas.values()) == ["v2"] * new_target
    assert all(r.state == RUNNING for r in replicas.values())


@pytest.mark.parametrize("target", [1, 2, 3, 5])
def test_rolling_update_never_drops_serving_below_target(target):
    _simulate_rolling_update(target, target)


@pytest.mark.parametrize("n_old, new_target", [(2, 4), (4, 2), (3, 0)])
def test_rolling_update_with_target_change_converges(n_old, new_target):
    _simulate_rolling_update(n_old, n_old, new_target)


# --------------------------------------------------------------------------- start_blocked


def test_start_blocked_fresh_start_starts_nothing():
    assert plan(Goal("v1", "c1", 3, start_blocked=True), []) == []


def test_start_blocked_keeps_old_replicas_serving():
    old = [rv("o1", t=1), rv("o2", t=2)]
    assert plan(Goal("v2", "c1", 2, start_blocked=True), old) == []


def test_start_blocked_partial_new_keeps_enough_old():
    replicas = [rv("o1", t=1), rv("o2", t=2), rv("o3", t=3), rv("n1", version="v2", t=5)]
    actions = plan(Goal("v2", "c1", 3, start_blocked=True), replicas)
    assert starts(actions) == 0
    assert stops(actions) == ["o1"]


def test_start_blocked_still_scales_down_and_reconfigures():
    replicas = [rv("a", t=1, config="c0"), rv("b", t=2, config="c0")]
    actions = plan(Goal("v1", "c1", 1, start_blocked=True), replicas)
    assert starts(actions) == 0
    assert stops(actions) == ["b"]
    assert "a" in reconfigs(actions)


def test_start_blocked_target_zero_stops_everything():
    replicas = [rv("o1", version="v0"), rv("a")]
    assert sorted(stops(plan(Goal("v1", "c1", 0, start_blocked=True), replicas))) == ["a", "o1"]


def test_rolling_update_lets_an_old_replica_go_when_new_ones_cannot_be_placed():
    """Surge-first needs room; new replicas Ray cannot place may take an old one's resources."""
    from serve_nb.core.reconcile import Goal, ReplicaView, StopReplica, plan
    from serve_nb.types import ReplicaState

    goal = Goal(version="v2", config_version="c", target=2)
    old = [ReplicaView(f"old{i}", "v1", "c", ReplicaState.RUNNING, started_at=i) for i in range(2)]
    placed = [ReplicaView(f"new{i}", "v2", "c", ReplicaState.STARTING, started_at=10 + i) for i in range(2)]
    assert not [a for a in plan(goal, old + placed) if isinstance(a, StopReplica)]  # still surge-first

    blocked = [ReplicaView(f"new{i}", "v2", "c", ReplicaState.STARTING, 10 + i, waiting_for_resources=True) for i in range(2)]
    stops = [a.replica_id for a in plan(goal, old + blocked) if isinstance(a, StopReplica)]
    assert stops == ["old0", "old1"]

    one_blocked = [placed[0], blocked[1]]
    stops = [a.replica_id for a in plan(goal, old + one_blocked) if isinstance(a, StopReplica)]
    assert stops == ["old0"]  # the oldest goes first
