"""Three nodes on this machine: load from the driver and the proxy spreads over replicas on every node,
and a node frozen under load (SIGSTOP) costs a few failed requests within seconds, not hung ones.

Each scenario needs its own multi-node Ray, so it runs in a child process."""

from __future__ import annotations

from pathlib import Path

from helpers import run_scenario


def test_calls_spread_over_replicas_on_every_node():
    run_scenario(Path(__file__).with_name("node_spread_scenario.py"))


def test_a_frozen_node_fails_its_requests_over_within_seconds():
    run_scenario(Path(__file__).with_name("frozen_node_scenario.py"))
