"""Issue 5: several nodes. The scenario needs its own multi-node Ray, so it runs in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_proxies_per_node_spread_resources_and_node_loss():
    script = Path(__file__).with_name("multinode_scenario.py")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    assert "multinode scenario passed" in proc.stdout
