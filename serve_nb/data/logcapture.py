"""Capture a replica's output (print and logging) into a buffer the controller collects for widgets.

Output still goes where it went (Ray's log files); the buffer only keeps lines to forward.
"""

from __future__ import annotations

import collections
import io
import logging
import sys
import threading
from typing import Any


class LogBuffer:
    """Thread-safe buffer of complete lines; ``drain`` hands over at most ``limit`` lines."""

    def __init__(self, maxlen: int = 500) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, line: str) -> None:
        line = line.rstrip()
        if line:
            with self._lock:
                self._lines.append(line[:2000])

    def drain(self, limit: int = 100) -> list[str]:
        with self._lock:
            out = []
            while self._lines and len(out) < limit:
                out.append(self._lines.popleft())
            return out


class _Tee(io.TextIOBase):
    def __init__(self, stream: Any, buffer: LogBuffer) -> None:
        self._stream = stream
        self._buffer = buffer
        self._partial = ""

    def write(self, text: str) -> int:
        try:
            self._stream.write(text)
        except Exception:
            pass
        pieces = (self._partial + text).split("\n")
        self._partial = pieces.pop()
        for piece in pieces:
            self._buffer.add(piece)
        return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except Exception:
            pass

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return False


class _Handler(logging.Handler):
    def __init__(self, buffer: LogBuffer) -> None:
        super().__init__(logging.INFO)
        self._buffer = buffer
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            for line in self.format(record).splitlines():
                self._buffer.add(line)
        except Exception:
            pass


def install(buffer: LogBuffer, handler: logging.Handler | None = None) -> None:
    """Tee stdout/stderr into ``buffer``; log records go to ``handler`` (a replica's Serve log, which feeds
    ``buffer`` itself), or else straight into ``buffer``."""
    sys.stdout = _Tee(sys.stdout, buffer)
    sys.stderr = _Tee(sys.stderr, buffer)
    logging.getLogger().addHandler(handler if handler is not None else _Handler(buffer))
