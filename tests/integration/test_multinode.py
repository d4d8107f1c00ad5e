"""Several nodes: a proxy per node, replicas spread and rescheduled when a node is lost.

The scenario needs its own multi-node Ray, so it runs in a child process."""

from __future__ import annotations

from pathlib import Path

from helpers import run_scenario


def test_proxies_per_node_spread_resources_and_node_loss():
    run_scenario(Path(__file__).with_name("multinode_scenario.py"))
