"""A process's Serve log: access lines and (in replicas) the user's log records, each with its request id.

Lines go to ``<logs_dir>/<component file>.log`` (Ray's session ``logs/serve`` unless ``logging_config``
says otherwise) and, in replicas, to the widget's log feed too. An access line costs the request path
one append to a deque (no lock): a daemon thread formats and writes what gathered every
``FLUSH_INTERVAL_S``, so a busy proxy does not pay for ``logging``'s records, locks and a write per request.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from typing import Any, Callable, TextIO

from serve_nb.core.log_format import LEVELS, LineFields, LogEncoding, LoggingConfig, line, text_lines
from serve_nb.data.context import current_request

#: How often gathered lines are written.
FLUSH_INTERVAL_S = 0.2
#: Lines kept while the file cannot be written (or between flushes under a flood): the oldest go first.
MAX_PENDING_LINES = 100_000

#: Lines formatted between two chances for the process's other threads to run.
CHUNK_LINES = 200
#: The widget keeps only recent lines: a flush under load hands it no more than this many (the last ones).
MAX_FED_LINES = 200

_Pending = tuple[float, str, str, str, str, "dict[str, Any] | None"]  # created, level, id, route, message, attrs
#: Levels an access line can have, each with the lowest ``log_level`` that still lets it through.
_ACCESS_LEVELS = ("INFO", "ERROR")


def _access_levels(config: LoggingConfig) -> frozenset[str]:
    """The access-line levels ``config`` writes: none with ``enable_access_log`` off, and none below its
    ``log_level`` (access lines are INFO, ERROR for a failed request, as in Ray Serve)."""
    if not config.enable_access_log:
        return frozenset()
    lowest = LEVELS.index(config.log_level)
    return frozenset(level for level in _ACCESS_LEVELS if LEVELS.index(level) >= lowest)


class ServeLog:
    """One per process. ``feed`` also receives every text line (the replica's widget log buffer)."""

    def __init__(self, who: LineFields, config: LoggingConfig, path: str | None,
                 feed: Callable[[str], None] | None = None) -> None:
        self.who = who
        self.config = config
        self._path = path
        self._feed = feed
        self._access = _access_levels(config)
        self._file: TextIO | None = None
        # Appended to from any thread, taken from by the writer only; full, it drops the oldest lines.
        self._pending: collections.deque[_Pending] = collections.deque(maxlen=MAX_PENDING_LINES)
        self._write_lock = threading.Lock()  # one writer at a time (the thread, flush(), configure(), close())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serve_nb-log", daemon=True)
        self._thread.start()

    @property
    def access_enabled(self) -> bool:
        return bool(self._access)

    def configure(self, config: LoggingConfig, path: str | None) -> None:
        """A new logging_config (a reconfigure): applies from the next line; the lines gathered before it are
        written as the old one said, where it said."""
        with self._write_lock:
            items = self._take()
            old, self.config = self.config, config
            self._access = _access_levels(config)
            self._write(items, old)
            if path != self._path and self._file is not None:
                self._file.close()
                self._file = None
            self._path = path

    def access(self, request_id: str, route: str, message: str, level: str = "INFO") -> None:
        """One access line; dropped when ``enable_access_log`` is off or ``level`` is below ``log_level``."""
        if level in self._access:
            self._add((time.time(), level, request_id, route, message, None))

    def record(self, level: str, message: str, attrs: dict[str, Any] | None = None) -> None:
        """A line of the process's own (a user's log record), with the current request's id; ``attrs`` are the
        record's ``additional_log_standard_attrs``."""
        request_id, route = current_request()
        self._add((time.time(), level, request_id, route, message, attrs))

    def _add(self, item: _Pending) -> None:
        self._pending.append(item)  # atomic: the writer takes from the other end

    def _take(self) -> list[_Pending]:
        """The lines gathered so far, oldest first; the caller holds the write lock."""
        pending = self._pending
        return [pending.popleft() for _ in range(len(pending))]

    def flush(self) -> None:
        """Write what gathered now."""
        with self._write_lock:
            self._write(self._take(), self.config)

    def _write(self, items: list[_Pending], config: LoggingConfig) -> None:
        """Format and write ``items`` as ``config`` says; the caller holds the write lock."""
        if not items:
            return
        who = self.who
        if self._feed is not None:
            text = LoggingConfig()  # the widget always shows text
            for created, level, request_id, route, message, attrs in items[-MAX_FED_LINES:]:
                self._feed(line(text, level, created, who, request_id, route, message, attrs))
        out = self._open()
        if out is None:
            return
        try:
            for start in range(0, len(items), CHUNK_LINES):
                if start:
                    time.sleep(0)  # let the event loop's thread run between chunks: a busy second's lines
                    # formatted in one go held the GIL long enough to stall every request in flight
                chunk = items[start : start + CHUNK_LINES]
                if config.encoding is LogEncoding.TEXT:
                    out.write(text_lines(chunk, who))
                else:
                    out.write("".join(line(config, level, created, who, request_id, route, message, attrs) + "\n"
                                      for created, level, request_id, route, message, attrs in chunk))
            out.flush()
        except OSError:
            pass

    def _open(self) -> TextIO | None:
        if self._file is None and self._path is not None:
            try:
                os.makedirs(os.path.dirname(self._path), exist_ok=True)
                self._file = open(self._path, "a", encoding="utf-8")
            except OSError:
                self._path = None  # not writable: the widget feed still gets the lines
        return self._file

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL_S):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush()
        with self._write_lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class ServeLogHandler(logging.Handler):
    """Sends the process's log records (a user's ``logging`` calls in a replica) to its ServeLog, so they
    carry the id of the request they were logged for."""

    def __init__(self, log: ServeLog) -> None:
        super().__init__(logging.INFO)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            wanted = self._log.config.additional_log_standard_attrs
            attrs = {name: getattr(record, name, None) for name in wanted} if wanted else None
            self._log.record(record.levelname, f"{record.name}: {record.getMessage()}" if record.name != "root"
                             else record.getMessage(), attrs)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            pass


def log_path(logs_dir: str | None, session_dir: str | None, file_name: str) -> str | None:
    """Where a component's log goes: ``logs_dir``, else the Ray session's ``logs/serve``; None if neither."""
    if logs_dir:
        return os.path.join(logs_dir, file_name)
    if session_dir:
        return os.path.join(session_dir, "logs", "serve", file_name)
    return None
