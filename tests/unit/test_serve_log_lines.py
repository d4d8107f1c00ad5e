"""Serve log lines in Ray Serve's shape, logging_config checked, lines written off the request path."""

from __future__ import annotations

import contextvars
import json
import logging
import time
from pathlib import Path

import pytest

from serve_nb.core.log_format import (
    CallOutcome, Component, LineFields, LogEncoding, LoggingConfig, call_access_message, http_access_message, line,
    text_lines,
)
from serve_nb.data.context import set_request
from serve_nb.data.serve_log import ServeLog, ServeLogHandler, log_path

REPLICA = LineFields(Component.REPLICA, "r1", "app", "Echo", "r1")
PROXY = LineFields(Component.PROXY, "10.0.0.1")


def test_a_text_access_line_has_level_time_component_replica_request_id_and_the_request():
    text = line(LoggingConfig(), "INFO", 0.0, REPLICA, "req-1", "/echo", http_access_message("GET", "/echo", 200, 12.34))
    level, _date, _time, component, replica, request_id, dashes, *message = text.split(" ")
    assert (level, component, replica, request_id, dashes) == ("INFO", "Echo", "r1", "req-1", "--")
    assert " ".join(message) == "GET /echo 200 12.3ms"
    proxy = line(LoggingConfig(), "INFO", 0.0, PROXY, "req-1", "/echo", "GET /echo 200 1.0ms")
    assert proxy.split(" ")[3:6] == ["proxy", "10.0.0.1", "req-1"]


def test_a_handle_calls_access_line_says_call_and_its_outcome():
    assert call_access_message("predict", CallOutcome.OK, 3.21) == "CALL predict OK 3.2ms"
    assert call_access_message("predict", CallOutcome.CANCELLED, 3.21) == "CALL predict CANCELLED 3.2ms"


def test_a_json_line_carries_the_same_fields_by_name():
    config = LoggingConfig.parse({"encoding": "json"})
    record = json.loads(line(config, "ERROR", 1.5, REPLICA, "req-9", "/echo", "GET /echo 500 1.0ms"))
    assert record["levelname"] == "ERROR" and record["message"] == "GET /echo 500 1.0ms"
    assert (record["request_id"], record["route"], record["deployment"], record["replica"], record["application"]) == (
        "req-9", "/echo", "Echo", "r1", "app")
    assert record["component_name"] == "replica" and record["timestamp_ns"] == 1_500_000_000


@pytest.mark.parametrize(("value", "error"), [
    ({"encoding": "XML"}, "encoding must be TEXT or JSON"),
    ({"log_level": "LOUD"}, "log_level must be one of"),
    ({"enable_access_log": "no"}, "enable_access_log must be True or False"),
    ({"colour": 1}, "unknown keys ['colour']"),
    ("JSON", "must be a dict or a LoggingConfig"),
])
def test_a_bad_logging_config_says_what_is_wrong(value, error):
    with pytest.raises((TypeError, ValueError), match=error.replace("[", r"\[").replace("]", r"\]")):
        LoggingConfig.parse(value)


def test_a_logging_config_reads_ray_serves_keys():
    config = LoggingConfig.parse({"encoding": "JSON", "log_level": logging.DEBUG, "enable_access_log": False,
                                  "logs_dir": "/tmp/x", "additional_log_standard_attrs": ["name"]})
    assert config == LoggingConfig(LogEncoding.JSON, "DEBUG", "/tmp/x", False, ("name",))
    assert LoggingConfig.parse(config.to_dict()) == config


def test_access_lines_and_user_records_reach_the_file_and_the_feed_with_their_request_id(tmp_path: Path):
    fed: list[str] = []
    path = log_path(None, str(tmp_path), "replica_app_Echo_r1.log")
    log = ServeLog(REPLICA, LoggingConfig(), path, fed.append)
    try:
        handler = ServeLogHandler(log)
        logger = logging.getLogger("user.model")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)

        def in_request() -> None:
            set_request("req-7", "/echo")
            logger.info("scored %d rows", 3)

        contextvars.copy_context().run(in_request)  # as in the request's own task
        log.access("req-7", "/echo", "GET /echo 200 1.0ms")
        log.flush()
        logger.removeHandler(handler)
    finally:
        log.close()
    written = Path(path).read_text().splitlines()
    assert [w.split(" -- ")[1] for w in written] == ["user.model: scored 3 rows", "GET /echo 200 1.0ms"]
    assert all(" req-7 -- " in w for w in written) and fed == written
    assert Path(path).parent == tmp_path / "logs" / "serve"


def test_access_lines_stop_when_the_access_log_is_turned_off(tmp_path: Path):
    path = str(tmp_path / "proxy.log")
    log = ServeLog(PROXY, LoggingConfig(), path)
    try:
        log.access("a", "/", "GET / 200 1.0ms")
        log.configure(LoggingConfig.parse({"enable_access_log": False}), path)
        log.access("b", "/", "GET / 200 1.0ms")
        log.record("WARNING", "still logged")
    finally:
        log.close()
    lines = Path(path).read_text().splitlines()
    assert len(lines) == 2 and " a -- GET" in lines[0] and lines[1].endswith("-- still logged")


def test_lines_are_written_by_the_logs_thread_within_its_interval(tmp_path: Path):
    path = tmp_path / "proxy.log"
    log = ServeLog(PROXY, LoggingConfig(), str(path))
    try:
        log.access("a", "/", "GET / 200 1.0ms")
        deadline = time.monotonic() + 5
        while not (path.exists() and path.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "GET / 200 1.0ms" in path.read_text()
    finally:
        log.close()


def test_additional_log_standard_attrs_join_a_users_line_in_text_and_json(tmp_path: Path):
    for encoding in ("TEXT", "JSON"):
        config = LoggingConfig.parse({"encoding": encoding, "additional_log_standard_attrs": ["funcName", "lineno"]})
        path = tmp_path / f"{encoding}.log"
        log = ServeLog(REPLICA, config, str(path))
        handler = ServeLogHandler(log)
        logger = logging.getLogger(f"user.attrs.{encoding}")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            logger.info("with attrs")
        finally:
            logger.removeHandler(handler)
            log.close()
        written = path.read_text().strip()
        if encoding == "JSON":
            record = json.loads(written)
            assert record["funcName"] == "test_additional_log_standard_attrs_join_a_users_line_in_text_and_json"
            assert isinstance(record["lineno"], int)
        else:
            assert " test_additional_log_standard_attrs_join_a_users_line_in_text_and_json " in written
            assert written.endswith(f"-- user.attrs.{encoding}: with attrs")


def test_a_flush_writes_every_line_however_many_gathered(tmp_path: Path):
    path = tmp_path / "proxy.log"
    log = ServeLog(PROXY, LoggingConfig(), str(path))
    try:
        for i in range(450):  # more than one chunk of lines
            log.access(f"id-{i}", "/", "GET / 200 1.0ms")
        log.flush()
    finally:
        log.close()
    ids = [line.split(" ")[5] for line in path.read_text().splitlines()]
    assert ids == [f"id-{i}" for i in range(450)]


def test_many_text_lines_at_once_each_have_their_own_time_id_and_attrs():
    created = 1_790_000_000.25
    items = [(created + i * 0.4, level, rid, "/r", message, attrs) for i, (level, rid, message, attrs) in enumerate([
        ("INFO", "id-1", "GET /r 200 1.0ms", None),
        ("ERROR", "", "no request id here", None),
        ("WARNING", "id-3", "with attrs", {"filename": "model.py", "lineno": 12}),
    ])]

    def stamp(at: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(at))) + f",{int(at * 1000) % 1000:03d}"

    replica = LineFields(Component.REPLICA, "ab12", "app", "Model", "ab12")
    assert text_lines(items, replica).splitlines() == [
        f"INFO {stamp(created)} Model ab12 id-1 -- GET /r 200 1.0ms",
        f"ERROR {stamp(created + 0.4)} Model ab12 -- no request id here",  # the next second: its own time
        f"WARNING {stamp(created + 0.8)} Model ab12 id-3 model.py 12 -- with attrs",
    ]
    assert text_lines(items[:1], PROXY) == f"INFO {stamp(created)} proxy 10.0.0.1 id-1 -- GET /r 200 1.0ms\n"
