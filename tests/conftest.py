"""Shared test set-up: never join a cluster the developer happens to point RAY_ADDRESS at."""

import os

os.environ.pop("RAY_ADDRESS", None)
