"""The ``serve_nb`` command: Ray Serve's ``serve`` CLI for serve_nb, plus ``export`` for notebooks."""

from serve_nb.cli.main import main

__all__ = ["main"]
