"""Importing serve_nb and its pure modules must not import Ray (it is loaded lazily)."""

from __future__ import annotations

import os
import subprocess
import sys

MODULES = [
    "serve_nb",
    "serve_nb.config",
    "serve_nb.deployment",
    "serve_nb.types",
    "serve_nb.exceptions",
    "serve_nb.core",
    "serve_nb.core.choice",
    "serve_nb.core.graph",
    "serve_nb.core.reconcile",
    "serve_nb.core.snapshots",
    "serve_nb.core.status",
    "serve_nb.core.versions",
]


def test_importing_serve_nb_does_not_load_ray():
    code = (
        "import importlib, sys\n"
        f"for m in {MODULES!r}:\n"
        "    importlib.import_module(m)\n"
        "loaded = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
        "print('RAY_LOADED' if loaded else 'NO_RAY', loaded[:5])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("NO_RAY"), result.stdout


def test_subprocess_check_would_detect_ray():
    """The check above can fail: importing ray in the same way is seen."""
    code = "import sys, ray\nprint('RAY_LOADED' if 'ray' in sys.modules else 'NO_RAY')\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "RAY_LOADED"
