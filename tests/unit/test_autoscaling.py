"""serve_nb.core.autoscaling: goal(), decide() with a fake clock (plain floats), multi-step simulations."""

from __future__ import annotations

import pytest

from serve_nb.config import AutoscalingConfig
from serve_nb.core.autoscaling import ScaleDirection, ScalingState, decide, goal


def cfg(**kw) -> AutoscalingConfig:
    base = dict(min_replicas=0, max_replicas=10, target_ongoing_requests=2.0, upscale_delay_s=30.0,
                downscale_delay_s=600.0)
    base.update(kw)
    return AutoscalingConfig(**base)


def simulate(config, current, steps, state=None):
    """Feed (time, ongoing) pairs through decide(), applying each decision; return the decisions."""
    state = state or ScalingState()
    out = []
    for now, ongoing in steps:
        d = decide(current, ongoing, config, now, state)
        out.append(d)
        current, state = d.desired, d.state
    return out


# --------------------------------------------------------------------------- goal


@pytest.mark.parametrize(
    "ongoing, target, expected",
    [
        (0, 2.0, 0),
        (-1, 2.0, 0),
        (0.5, 2.0, 1),
        (2, 2.0, 1),
        (2.01, 2.0, 2),
        (4, 2.0, 2),
        (5, 2.0, 3),
        (7, 1.0, 7),
        (1, 0.5, 2),
        (1.1, 0.5, 3),
        (0.6, 0.2, 3),  # 0.6 / 0.2 == 2.9999999999999996
        # floating-point quotients a hair above an integer must not round up a whole replica
        (0.1 + 0.2, 0.1, 3),  # 0.30000000000000004 / 0.1 == 3.0000000000000004
        (0.1 * 12, 0.2, 6),  # 1.2000000000000002 / 0.2 == 6.000000000000001
    ],
)
def test_goal_is_ceil_of_ongoing_over_target(ongoing, target, expected):
    assert goal(ongoing, cfg(target_ongoing_requests=target)) == expected


def test_goal_ignores_bounds():
    # bounds are decide()'s business; goal is the raw need
    assert goal(100, cfg(max_replicas=3)) == 50
    assert goal(0, cfg(min_replicas=2, max_replicas=3)) == 0


# --------------------------------------------------------------------------- steady


def test_steady_when_goal_equals_current():
    d = decide(3, 6, cfg(), 100.0, ScalingState())
    assert d.desired == 3
    assert d.reason == "steady at 3: 6 ongoing / target 2"
    assert d.state == ScalingState()
    assert d.direction is ScaleDirection.NONE


def test_steady_resets_a_pending_direction():
    d = decide(3, 6, cfg(), 100.0, ScalingState(direction=1, since=50.0))
    assert d.state == ScalingState()


def test_steady_at_max_even_when_load_wants_more():
    d = decide(4, 100, cfg(max_replicas=4), 0.0, ScalingState())
    assert d.desired == 4
    assert d.reason.startswith("steady at 4")
    assert "100 ongoing" in d.reason


def test_steady_at_min_even_with_no_load():
    d = decide(2, 0, cfg(min_replicas=2), 0.0, ScalingState())
    assert (d.desired, d.state) == (2, ScalingState())
    assert d.reason.startswith("steady at 2")


# --------------------------------------------------------------------------- upscale with delay


def test_upscale_waits_for_delay_and_reports_progress():
    config = cfg(upscale_delay_s=30.0)
    d = decide(1, 8, config, 1000.0, ScalingState())
    assert d.desired == 1
    assert d.state == ScalingState(direction=1, since=1000.0)
    assert d.reason == "waiting to scale up 1 -> 4 (8 ongoing / target 2 wants 4; 0s of 30s)"
    assert d.direction is ScaleDirection.NONE

    d = decide(1, 8, config, 1010.0, d.state)
    assert d.desired == 1
    assert d.state.since == 1000.0  # the clock keeps running while the wish is continuous
    assert "10s of 30s" in d.reason

    d = decide(1, 8, config, 1030.0, d.state)
    assert d.desired == 4
    assert d.reason == "scale up 1 -> 4: 8 ongoing / target 2 wants 4"
    assert d.direction is ScaleDirection.UP
    assert d.state == ScalingState()


def test_upscale_one_tick_before_delay_still_waits():
    config = cfg(upscale_delay_s=30.0)
    d = decide(1, 8, config, 0.0, ScalingState())
    d = decide(1, 8, config, 29.9, d.state)
    assert d.desired == 1
    assert d.reason.startswith("waiting to scale up")


def test_zero_upscale_delay_scales_at_once():
    d = decide(1, 8, cfg(upscale_delay_s=0.0), 5.0, ScalingState())
    assert d.desired == 4
    assert d.reason.startswith("scale up 1 -> 4")


def test_upscale_clamped_to_max_and_reason_names_raw_goal():
    d = decide(2, 40, cfg(max_replicas=5, upscale_delay_s=0.0), 0.0, ScalingState())
    assert d.desired == 5
    assert d.reason == "scale up 2 -> 5: 40 ongoing / target 2 wants 20"


def test_reason_formats_fractional_load_and_target():
    d = decide(1, 2.5, cfg(target_ongoing_requests=0.5, upscale_delay_s=0.0), 0.0, ScalingState())
    assert d.desired == 5
    assert d.reason == "scale up 1 -> 5: 2.5 ongoing / target 0.5 wants 5"


def test_upscale_to_min_uses_upscale_delay():
    # below min with no load: the policy wants min, as an upscale
    d = decide(1, 0, cfg(min_replicas=3, upscale_delay_s=30.0), 0.0, ScalingState())
    assert (d.desired, d.state.direction) == (1, 1)
    d = decide(1, 0, cfg(min_replicas=3, upscale_delay_s=30.0), 30.0, d.state)
    assert d.desired == 3


def test_above_max_scales_down_to_max():
    d = decide(8, 100, cfg(max_replicas=5, downscale_delay_s=0.0), 0.0, ScalingState())
    assert d.desired == 5
    assert d.reason.startswith("scale down 8 -> 5")


# --------------------------------------------------------------------------- downscale with delay


def test_downscale_waits_for_downscale_delay():
    config = cfg(downscale_delay_s=600.0)
    d = decide(4, 2, config, 0.0, ScalingState())
    assert d.desired == 4
    assert d.state == ScalingState(direction=-1, since=0.0)
    assert d.reason == "waiting to scale down 4 -> 1 (2 ongoing / target 2 wants 1; 0s of 600s)"
    d = decide(4, 2, config, 599.0, d.state)
    assert d.desired == 4
    assert "599s of 600s" in d.reason
    d = decide(4, 2, config, 600.0, d.state)
    assert d.desired == 1
    assert d.reason == "scale down 4 -> 1: 2 ongoing / target 2 wants 1"
    assert d.direction is ScaleDirection.DOWN


def test_upscale_and_downscale_delays_are_independent():
    config = cfg(upscale_delay_s=5.0, downscale_delay_s=50.0)
    up = simulate(config, 1, [(0.0, 8), (5.0, 8)])
    assert [d.desired for d in up] == [1, 4]
    down = simulate(config, 4, [(0.0, 2), (5.0, 2), (49.0, 2), (50.0, 2)])
    assert [d.desired for d in down] == [4, 4, 4, 1]


# --------------------------------------------------------------------------- direction flips reset the clock


def test_flip_from_up_to_down_restarts_the_clock():
    config = cfg(upscale_delay_s=30.0, downscale_delay_s=30.0)
    d = decide(3, 20, config, 0.0, ScalingState())  # wants up
    assert d.state == ScalingState(1, 0.0)
    d = decide(3, 1, config, 20.0, d.state)  # now wants down
    assert d.state == ScalingState(-1, 20.0)
    assert "0s of 30s" in d.reason
    d = decide(3, 1, config, 40.0, d.state)  # 40s since the first wish, but only 20s of this one
    assert d.desired == 3
    assert "20s of 30s" in d.reason
    d = decide(3, 1, config, 50.0, d.state)
    assert d.desired == 1


def test_flip_from_down_to_up_restarts_the_clock():
    config = cfg(upscale_delay_s=30.0, downscale_delay_s=30.0)
    decisions = simulate(config, 3, [(0.0, 1), (25.0, 20), (35.0, 20), (54.0, 20), (55.0, 20)])
    assert [d.desired for d in decisions] == [3, 3, 3, 3, 10]
    assert decisions[1].state == ScalingState(1, 25.0)


def test_a_steady_tick_in_between_restarts_the_clock():
    # "wanted continuously": one tick with no wish to change breaks the run
    config = cfg(upscale_delay_s=30.0)
    decisions = simulate(config, 1, [(0.0, 8), (20.0, 2), (25.0, 8), (50.0, 8), (55.0, 8)])
    assert [d.desired for d in decisions] == [1, 1, 1, 1, 4]
    assert decisions[1].reason.startswith("steady at 1")
    assert decisions[2].state == ScalingState(1, 25.0)


def test_changing_magnitude_in_the_same_direction_keeps_the_clock():
    config = cfg(upscale_delay_s=30.0)
    decisions = simulate(config, 1, [(0.0, 4), (15.0, 12), (30.0, 6)])
    assert [d.desired for d in decisions] == [1, 1, 3]
    assert decisions[1].state.since == 0.0


def test_stale_state_from_before_a_change_does_not_shortcut_the_delay():
    # after a scale-up the returned state is fresh: the next scale-up waits the full delay again
    config = cfg(upscale_delay_s=30.0, upscaling_factor=0.5)
    decisions = simulate(config, 1, [(0.0, 20), (30.0, 20), (31.0, 20), (60.0, 20), (61.0, 20)])
    assert [d.desired for d in decisions] == [1, 6, 6, 6, 8]


# --------------------------------------------------------------------------- smoothing factors


@pytest.mark.parametrize(
    "current, ongoing, factor, expected",
    [
        (1, 20, 0.5, 6),  # goal 10: 1 + ceil(9 * 0.5)
        (2, 20, 0.25, 4),  # goal 10: 2 + ceil(8 * 0.25)
        (1, 4, 0.1, 2),  # tiny factor still moves one step
        (1, 20, 1.0, 10),
        (1, 20, 3.0, 10),  # overshoot is capped by max_replicas
    ],
)
def test_upscaling_factor_moves_part_of_the_way(current, ongoing, factor, expected):
    config = cfg(upscaling_factor=factor, upscale_delay_s=0.0)
    assert decide(current, ongoing, config, 0.0, ScalingState()).desired == expected


@pytest.mark.parametrize(
    "current, ongoing, factor, expected",
    [
        (10, 2, 0.5, 5),  # goal 1: 10 - ceil(9 * 0.5)
        (9, 2, 0.25, 7),  # goal 1: 9 - ceil(8 * 0.25)
        (2, 2, 0.5, 1),  # one above the goal must still reach it
        (2, 2, 0.01, 1),
        (5, 8, 0.1, 4),  # goal 4, tiny factor: one step
    ],
)
def test_downscaling_factor_moves_part_of_the_way(current, ongoing, factor, expected):
    config = cfg(downscaling_factor=factor, downscale_delay_s=0.0)
    assert decide(current, ongoing, config, 0.0, ScalingState()).desired == expected


def test_downscaling_factor_never_sticks_one_above_the_goal():
    config = cfg(min_replicas=1, downscaling_factor=0.5, downscale_delay_s=10.0)
    steps = [(t, 2.0) for t in range(0, 200, 5)]  # goal 1 throughout
    decisions = simulate(config, 8, steps)
    finals = [d.desired for d in decisions]
    assert finals[-1] == 1
    # monotone non-increasing, each change after a full delay
    assert all(a >= b for a, b in zip(finals, finals[1:]))
    changes = [d.reason for d in decisions if d.direction is not ScaleDirection.NONE]
    assert changes == [
        "scale down 8 -> 4: 2 ongoing / target 2 wants 1",
        "scale down 4 -> 2: 2 ongoing / target 2 wants 1",
        "scale down 2 -> 1: 2 ongoing / target 2 wants 1",
    ]


def test_upscaling_factor_converges_to_goal():
    config = cfg(upscaling_factor=0.5, upscale_delay_s=0.0)
    decisions = simulate(config, 1, [(float(t), 20) for t in range(6)])
    assert [d.desired for d in decisions] == [6, 8, 9, 10, 10, 10]


def test_factor_does_not_apply_when_unset():
    assert decide(1, 20, cfg(upscale_delay_s=0.0), 0.0, ScalingState()).desired == 10
    assert decide(10, 2, cfg(downscale_delay_s=0.0), 0.0, ScalingState()).desired == 1


# --------------------------------------------------------------------------- scale to zero


def test_scale_to_zero_goes_through_one_first():
    config = cfg(min_replicas=0, downscale_delay_s=60.0, downscale_to_zero_delay_s=300.0)
    d = decide(3, 0, config, 0.0, ScalingState())
    assert d.desired == 3
    assert "waiting to scale down 3 -> 1" in d.reason
    assert "of 60s" in d.reason  # the ordinary downscale delay, not the to-zero one
    d = decide(3, 0, config, 60.0, d.state)
    assert d.desired == 1
    assert d.reason == "scale down 3 -> 1: 0 ongoing / target 2 wants 0"
    # now at one replica: to zero only after the to-zero delay, counted from here
    d = decide(1, 0, config, 61.0, d.state)
    assert d.desired == 1
    assert d.reason == "waiting to scale down 1 -> 0 (0 ongoing / target 2 wants 0; 0s of 300s)"
    d = decide(1, 0, config, 360.0, d.state)
    assert d.desired == 1
    assert "299s of 300s" in d.reason
    d = decide(1, 0, config, 361.0, d.state)
    assert d.desired == 0
    assert d.reason == "scale down 1 -> 0: 0 ongoing / target 2 wants 0"


def test_scale_to_zero_from_two_with_no_factor_stops_at_one():
    d = decide(2, 0, cfg(downscale_delay_s=0.0, downscale_to_zero_delay_s=0.0), 0.0, ScalingState())
    assert d.desired == 1


def test_to_zero_delay_defaults_to_downscale_delay():
    config = cfg(downscale_delay_s=100.0, downscale_to_zero_delay_s=None)
    decisions = simulate(config, 1, [(0.0, 0), (99.0, 0), (100.0, 0)])
    assert [d.desired for d in decisions] == [1, 1, 0]
    assert "of 100s" in decisions[0].reason


def test_to_zero_delay_can_be_shorter_than_downscale_delay():
    config = cfg(downscale_delay_s=600.0, downscale_to_zero_delay_s=5.0)
    decisions = simulate(config, 1, [(0.0, 0), (5.0, 0)])
    assert [d.desired for d in decisions] == [1, 0]


def test_no_scale_to_zero_when_min_is_one():
    d = decide(1, 0, cfg(min_replicas=1, downscale_delay_s=0.0), 0.0, ScalingState())
    assert d.desired == 1
    assert d.reason.startswith("steady at 1")


def test_zero_replicas_and_no_load_stays_at_zero():
    d = decide(0, 0, cfg(min_replicas=0), 0.0, ScalingState())
    assert d.desired == 0
    assert d.reason.startswith("steady at 0")


# --------------------------------------------------------------------------- cold start


@pytest.mark.parametrize("ongoing", [0.1, 1, 2])
def test_cold_start_scales_to_one_immediately(ongoing):
    config = cfg(upscale_delay_s=300.0)
    d = decide(0, ongoing, config, 12.0, ScalingState(direction=-1, since=0.0))
    assert d.desired == 1
    assert d.direction is ScaleDirection.UP
    assert d.reason.startswith("scale up 0 -> 1:")
    assert f"{ongoing:g} request(s) waiting" in d.reason
    assert "cold start" in d.reason
    assert d.state == ScalingState()


def test_cold_start_goes_straight_to_the_goal():
    d = decide(0, 7, cfg(upscale_delay_s=300.0), 0.0, ScalingState())
    assert d.desired == 4
    assert d.reason == "scale up 0 -> 4: 7 request(s) waiting with no replica (cold start)"


def test_cold_start_respects_max_and_min():
    assert decide(0, 100, cfg(max_replicas=3), 0.0, ScalingState()).desired == 3
    assert decide(0, 1, cfg(min_replicas=2, max_replicas=5), 0.0, ScalingState()).desired == 2


def test_cold_start_with_upscaling_factor_still_at_least_one():
    d = decide(0, 1, cfg(upscaling_factor=0.01, upscale_delay_s=300.0), 0.0, ScalingState())
    assert d.desired == 1


def test_scale_to_zero_then_cold_start_round_trip():
    config = cfg(downscale_delay_s=10.0, downscale_to_zero_delay_s=10.0, upscale_delay_s=100.0)
    decisions = simulate(config, 2, [(0.0, 0), (10.0, 0), (11.0, 0), (21.0, 0), (22.0, 0), (23.0, 3)])
    assert [d.desired for d in decisions] == [2, 1, 1, 0, 0, 2]
    assert "cold start" in decisions[-1].reason


# --------------------------------------------------------------------------- Decision.direction


def test_direction_is_set_exactly_when_desired_differs_from_current():
    """Callers learn whether a decision is a change from data, never from the reason text."""
    config = cfg(min_replicas=0, max_replicas=10, upscale_delay_s=5.0, downscale_delay_s=5.0)
    steps = list(enumerate([0, 8, 8, 8, 8, 8, 8, 0, 0, 0, 0, 0, 0, 0, 3, 3]))
    current = 0
    state = ScalingState()
    seen = set()
    for now, ongoing in steps:
        d = decide(current, ongoing, config, float(now), state)
        expected = (ScaleDirection.UP if d.desired > current else
                    ScaleDirection.DOWN if d.desired < current else ScaleDirection.NONE)
        assert d.direction is expected, (now, current, d)
        seen.add(d.direction)
        current, state = d.desired, d.state
    assert seen == set(ScaleDirection)


def test_waiting_for_a_delay_is_not_a_change_even_though_a_direction_is_pending():
    d = decide(1, 8, cfg(upscale_delay_s=30.0), 0.0, ScalingState())
    assert d.state.direction is ScaleDirection.UP  # the wish, remembered for the delay
    assert d.direction is ScaleDirection.NONE  # the decision: stay at 1 for now
    assert d.desired == 1


# --------------------------------------------------------------------------- a longer simulation


def test_traffic_burst_simulation():
    config = cfg(min_replicas=1, max_replicas=8, target_ongoing_requests=2.0, upscale_delay_s=10.0,
                 downscale_delay_s=60.0)
    load = {t: (14 if 20 <= t < 120 else 1) for t in range(0, 300, 5)}
    current, state, history = 1, ScalingState(), []
    for t in range(0, 300, 5):
        d = decide(current, load[t], config, float(t), state)
        if d.desired != current:
            history.append((t, current, d.desired))
        current, state = d.desired, d.state
    # up 10s after the burst starts; down 60s after it ends
    assert history == [(30, 1, 7), (180, 7, 1)]
