"""Node faults on a 3-node cluster on this machine: the controller stays on the head, status says when it
does not answer, a frozen node's proxy turns UNHEALTHY and its replica is replaced elsewhere, a cleanly removed
node's replicas are reported as replaced, and proxies share the port by default.

The scenario needs its own multi-node Ray, so it runs in a child process."""

from __future__ import annotations

from pathlib import Path

from helpers import run_scenario


def test_frozen_and_removed_nodes_controller_on_head_and_shared_port():
    run_scenario(Path(__file__).with_name("node_faults_scenario.py"))
