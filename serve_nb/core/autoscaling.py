"""The autoscaling policy: a pure function from load and time to a desired replica count, with a reason.

    decide(current, ongoing, config, now, state) -> Decision(desired, reason, state, direction)

``ongoing`` is the average total of ongoing plus queued requests over the look-back window.
Delays hold a change until it has been wanted continuously that long; a flip of direction
restarts the clock. Scaling to zero only ever happens from one replica.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

from serve_nb.config import AutoscalingConfig


class ScaleDirection(IntEnum):
    """Which way replicas move. An int (+1 / -1 / 0) so the policy can compare and store it as a sign."""

    DOWN = -1
    NONE = 0
    UP = 1


@dataclass(frozen=True)
class ScalingState:
    """Which way the policy has wanted to move, and since when (``NONE`` = content)."""

    direction: ScaleDirection = ScaleDirection.NONE
    since: float = 0.0


@dataclass(frozen=True)
class Decision:
    """What to do now. ``direction`` says whether ``desired`` is a change (so callers never read ``reason``,
    which is for people); it is ``NONE`` while steady and while a change waits out its delay."""

    desired: int
    reason: str
    state: ScalingState
    direction: ScaleDirection


def goal(ongoing: float, config: AutoscalingConfig) -> int:
    """Replicas needed to keep each at the target: ceil(total ongoing / target)."""
    if ongoing <= 0:
        return 0
    return math.ceil(ongoing / config.target_ongoing_requests - 1e-9)


def _smooth(current: int, raw: int, config: AutoscalingConfig) -> int:
    """Move part of the way when a factor is set; always at least one step, so it never sticks."""
    if raw > current and config.upscaling_factor is not None:
        return current + max(1, math.ceil((raw - current) * config.upscaling_factor))
    if raw < current and config.downscaling_factor is not None:
        return current - max(1, math.ceil((current - raw) * config.downscaling_factor))
    return raw


def decide(current: int, ongoing: float, config: AutoscalingConfig, now: float, state: ScalingState) -> Decision:
    raw = goal(ongoing, config)
    # A request waiting on a deployment with no replicas: start one now, without the upscale delay.
    if current == 0 and ongoing > 0:
        desired = max(1, min(config.max_replicas, max(config.min_replicas, _smooth(0, raw, config))))
        return Decision(desired, f"scale up 0 -> {desired}: {ongoing:g} request(s) waiting with no replica (cold start)",
                        ScalingState(), ScaleDirection.UP)
    desired = min(config.max_replicas, max(config.min_replicas, _smooth(current, raw, config)))
    if desired == 0 and current > 1:
        desired = 1  # to zero only from one
    if desired == current:
        return Decision(current, f"steady at {current}: {ongoing:g} ongoing / target {config.target_ongoing_requests:g}",
                        ScalingState(), ScaleDirection.NONE)
    direction = ScaleDirection.UP if desired > current else ScaleDirection.DOWN
    if state.direction != direction:
        state = ScalingState(direction, now)
    if direction is ScaleDirection.UP:
        delay = config.upscale_delay_s
    elif desired == 0:
        delay = config.downscale_to_zero_delay_s if config.downscale_to_zero_delay_s is not None else config.downscale_delay_s
    else:
        delay = config.downscale_delay_s
    waited = now - state.since
    verb = "scale up" if direction is ScaleDirection.UP else "scale down"
    why = f"{ongoing:g} ongoing / target {config.target_ongoing_requests:g} wants {raw}"
    if waited + 1e-9 < delay:
        return Decision(current, f"waiting to {verb} {current} -> {desired} ({why}; {waited:.0f}s of {delay:g}s)",
                        state, ScaleDirection.NONE)
    return Decision(desired, f"{verb} {current} -> {desired}: {why}", ScalingState(), direction)
