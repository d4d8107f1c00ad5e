"""Shared test set-up: never join a cluster the developer happens to point RAY_ADDRESS at."""

import os

os.environ.pop("RAY_ADDRESS", None)

import signal
import threading

import pytest

#: Signals the tests deliver (an interrupt, Ctrl-C to a CLI child, pytest-timeout's alarm, a stop).
_DELIVERED = {signal.SIGINT, signal.SIGTERM, signal.SIGALRM}


@pytest.fixture(autouse=True)
def _signals_unblocked_in_the_main_thread():
    """Two full runs saw a SIGINT and pytest-timeout's SIGALRM go unhandled in this process, and the CLI tests
    that stop a child with Ctrl-C fail after that point (children inherit the signal mask). A mask left blocked
    by a library that blocks signals while it starts threads would explain both (not confirmed), so the
    signals the tests deliver are unblocked before each test rather than one test's leak reaching the rest."""
    if threading.current_thread() is threading.main_thread():
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _DELIVERED)
    yield
