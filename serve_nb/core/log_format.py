"""Serve log lines in Ray Serve's shape, and the ``logging_config`` that chooses them. Pure.

Text: ``LEVEL time component component_id request_id -- message``; an access line's message is
``METHOD route status 12.3ms`` for HTTP and ``CALL method OK 12.3ms`` for handle calls. JSON: one object
per line, with the same fields by name, so log pipelines built for Ray Serve's JSON logs parse them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any, Iterable, Mapping

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class LogEncoding(str, Enum):
    TEXT = "TEXT"
    JSON = "JSON"


class Component(str, Enum):
    """Which part of Serve wrote a line (``component_name`` in JSON)."""

    PROXY = "proxy"
    REPLICA = "replica"


class CallOutcome(str, Enum):
    """How a handle call ended, as its access line says."""

    OK = "OK"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class LoggingConfig:
    """Ray Serve's ``LoggingConfig``: per deployment, per application (``serve.run``), or for the proxies
    (``serve.start``). ``logs_dir`` None: the Ray session's ``logs/serve``."""

    encoding: LogEncoding = LogEncoding.TEXT
    log_level: str = "INFO"
    logs_dir: str | None = None
    enable_access_log: bool = True
    additional_log_standard_attrs: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: "LoggingConfig | Mapping[str, Any] | None", where: str = "logging_config") -> "LoggingConfig":
        """A LoggingConfig from what a user passes (None: the defaults). ValueError/TypeError say what was wrong."""
        if value is None:
            return cls()
        if isinstance(value, LoggingConfig):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(f"{where} must be a dict or a LoggingConfig, got {type(value).__name__}.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"{where} has unknown keys {unknown}; it accepts {sorted(known)}.")
        encoding = str(value.get("encoding", "TEXT")).upper()
        if encoding not in LogEncoding.__members__:
            raise ValueError(f"{where}: encoding must be TEXT or JSON, got {value['encoding']!r}.")
        level = value.get("log_level", "INFO")
        if isinstance(level, int):
            level = logging.getLevelName(level)
        if not isinstance(level, str) or level.upper() not in LEVELS:
            raise ValueError(f"{where}: log_level must be one of {', '.join(LEVELS)}, got {level!r}.")
        logs_dir = value.get("logs_dir")
        if logs_dir is not None and not isinstance(logs_dir, str):
            raise TypeError(f"{where}: logs_dir must be a path string or None.")
        access = value.get("enable_access_log", True)
        if not isinstance(access, bool):
            raise TypeError(f"{where}: enable_access_log must be True or False, got {access!r}.")
        attrs = value.get("additional_log_standard_attrs") or ()
        if isinstance(attrs, str) or not all(isinstance(a, str) for a in attrs):
            raise TypeError(f"{where}: additional_log_standard_attrs must be a list of LogRecord attribute names.")
        return cls(LogEncoding(encoding), level.upper(), logs_dir, access, tuple(attrs))

    def to_dict(self) -> dict[str, Any]:
        return {"encoding": self.encoding.value, "log_level": self.log_level, "logs_dir": self.logs_dir,
                "enable_access_log": self.enable_access_log,
                "additional_log_standard_attrs": list(self.additional_log_standard_attrs)}


def http_access_message(method: str, route: str, status: int, latency_ms: float) -> str:
    return f"{method} {route} {status} {latency_ms:.1f}ms"


def call_access_message(method: str, outcome: CallOutcome, latency_ms: float) -> str:
    return f"CALL {method} {outcome.value} {latency_ms:.1f}ms"


_second: tuple[int, str] = (-1, "")  # the last whole second formatted: lines come many per second


def asctime(created: float) -> str:
    """``logging``'s default time format (local time, milliseconds after a comma)."""
    global _second
    whole = int(created)
    cached = _second  # one read: another thread may replace it meanwhile, never half of it
    if cached[0] != whole:
        cached = _second = (whole, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(whole)))
    return f"{cached[1]},{int(created * 1000) % 1000:03d}"


@dataclass(frozen=True)
class LineFields:
    """Who writes: fixed for a process's component."""

    component: Component
    component_id: str
    application: str = ""
    deployment: str = ""
    replica: str = ""


def text_line(level: str, created: float, who: LineFields, request_id: str, message: str,
              attrs: Mapping[str, Any] | None = None) -> str:
    """``attrs`` (a record's ``additional_log_standard_attrs``) go before the ``--``, in order, as Ray Serve puts them."""
    return text_lines([(created, level, request_id, "", message, attrs)], who)[:-1]


def text_lines(items: "Iterable[tuple[float, str, str, str, str, Mapping[str, Any] | None]]", who: LineFields) -> str:
    """``text_line`` for many lines at once, each ended by a newline: what a log writer does with a busy
    second's access lines, so it formats the fixed parts once (a call per line was most of the cost).
    ``items``: (created, level, request id, route, message, attrs)."""
    name = who.component.value if who.component is Component.PROXY else who.deployment
    plain_head = f" {name} {who.component_id}"
    out = []
    second, stamp = -1, ""
    for created, level, request_id, _route, message, attrs in items:
        whole = int(created)
        if whole != second:
            second, stamp = whole, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(whole))
        head = f"{level} {stamp},{int(created * 1000) % 1000:03d}{plain_head}"
        if request_id:
            head = f"{head} {request_id}"
        if attrs:
            head += "".join(f" {value}" for value in attrs.values())
        out.append(f"{head} -- {message}\n")
    return "".join(out)


def json_line(level: str, created: float, who: LineFields, request_id: str, route: str, message: str,
              extra: Mapping[str, Any] | None = None) -> str:
    record: dict[str, Any] = {
        "levelname": level, "asctime": asctime(created), "message": message,
        "component_name": who.component.value, "component_id": who.component_id,
        "timestamp_ns": int(created * 1e9),
    }
    if who.component is Component.REPLICA:
        record.update(application=who.application, deployment=who.deployment, replica=who.replica)
    if request_id:
        record["request_id"] = request_id
    if route:
        record["route"] = route
    if extra:
        record.update(extra)
    return json.dumps(record, default=str)


def line(config: LoggingConfig, level: str, created: float, who: LineFields, request_id: str, route: str,
         message: str, extra: Mapping[str, Any] | None = None) -> str:
    if config.encoding is LogEncoding.JSON:
        return json_line(level, created, who, request_id, route, message, extra)
    return text_line(level, created, who, request_id, message, extra)
