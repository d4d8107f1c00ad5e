"""``%serve_connect [ADDRESS] [--port N] [--host H]`` picks the HTTP proxies' address; a taken port is one line
naming it and the flag to use, and the port asked for is not dropped after a failed start. Serve is faked (no Ray):
these check what the magic asks of ``serve_nb`` and what it tells the user."""

from __future__ import annotations

from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython import get_ipython
from IPython.testing.globalipapp import start_ipython

import serve_nb
from serve_nb.exceptions import PortInUseError, RayServeException
from serve_nb.types import ServeStatus


class FakeServe:
    """Records the calls; ``taken`` ports make ``start`` fail as a real proxy on a taken port does."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.taken: set[int] = set()

    def connect(self, address: str | None = None) -> str:
        self.calls.append(("connect", address))
        return f"Connected to {address or 'local Ray'}."

    def start(self, http_options: dict[str, Any] | None = None) -> None:
        self.calls.append(("start", http_options))
        port = (http_options or {}).get("port", 8000)
        if port in self.taken:
            raise PortInUseError((http_options or {}).get("host", "127.0.0.1"), port)

    def status(self) -> ServeStatus:
        return ServeStatus()

    def shutdown(self) -> None:
        self.calls.append(("shutdown", None))

    def run(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("run", kwargs.get("name")))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@pytest.fixture(scope="module")
def ip():
    shell = start_ipython() or get_ipython()  # one test shell per process: a second start returns None
    shell.run_line_magic("load_ext", "serve_nb")
    return shell


@pytest.fixture
def fake(ip, monkeypatch):
    serve = FakeServe()
    for name in ("connect", "start", "status", "shutdown", "run"):
        monkeypatch.setattr(serve_nb, name, getattr(serve, name))
    monkeypatch.setattr(serve_nb.api, "wait_for_app", lambda name, prefix: None)  # the fake's apps start at once
    magics = ip.magics_manager.registry["ServeMagics"]
    yield serve
    magics._http_options = {}
    for widget in magics._widgets.values():
        widget.close()
    magics._widgets.clear()


def test_port_and_host_start_serve_with_those_http_options(ip, fake, capsys):
    ip.run_line_magic("serve_connect", "--port 8123 --host 0.0.0.0")
    assert fake.calls == [("connect", None), ("start", {"host": "0.0.0.0", "port": 8123})]
    assert capsys.readouterr().out.splitlines() == ["Connected to local Ray.", "Serve's HTTP proxies listen on 0.0.0.0:8123."]


def test_an_address_with_a_port_connects_there_then_starts_on_the_port(ip, fake, capsys):
    ip.run_line_magic("serve_connect", "10.0.0.5:6379 --port 8200")
    assert fake.calls == [("connect", "10.0.0.5:6379"), ("start", {"port": 8200})]


def test_without_port_or_host_only_ray_is_connected(ip, fake, capsys):
    ip.run_line_magic("serve_connect", "")
    assert fake.calls == [("connect", None)]


@pytest.mark.parametrize("line, message", [
    ("--port 0", "--port must be between 1 and 65535, got 0"),
    ("--port 70000", "--port must be between 1 and 65535, got 70000"),
    ("--port eighty", "invalid int value: 'eighty'"),
    ("a b", "unrecognized arguments: b"),
])
def test_bad_arguments_are_a_clear_error_and_connect_nothing(ip, fake, line, message):
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic("serve_connect", line)
    assert fake.calls == []


def test_a_taken_port_is_one_line_naming_it_and_the_flag_to_use(ip, fake, capsys):
    fake.taken = {8000}
    with pytest.raises(UsageError) as info:
        ip.run_line_magic("serve_connect", "--port 8000")
    assert str(info.value) == "Port 8000 is taken; use %serve_connect --port 8001"
    assert fake.names() == ["connect", "start", "shutdown"]  # nothing deployed: stopped, so --port 8001 can work
    ip.run_line_magic("serve_connect", "--port 8001")
    assert fake.calls[-1] == ("start", {"port": 8001})


def test_after_a_failed_start_a_serve_cell_asks_for_the_same_port_instead_of_the_default(ip, fake, capsys):
    fake.taken = {8000}
    with pytest.raises(UsageError):
        ip.run_line_magic("serve_connect", "--port 8000")
    with pytest.raises(UsageError) as info:
        ip.run_cell_magic("serve", "--name shop", "def shop(request):\n    return 'hi'\n")
    assert str(info.value) == "Port 8000 is taken; use %serve_connect --port 8001"
    assert "run" not in fake.names()  # nothing deployed on another port behind the user's back
    fake.taken = set()  # the other program let go of it
    ip.run_cell_magic("serve", "--name shop", "def shop(request):\n    return 'hi'\n")
    assert fake.calls[-2:] == [("start", {"port": 8000}), ("run", "shop")]


def test_another_start_failure_is_one_usage_error_line_too(ip, fake, monkeypatch):
    def broken(http_options: dict[str, Any] | None = None) -> None:
        raise RayServeException("The HTTP proxy could not start: no route to host")

    monkeypatch.setattr(serve_nb, "start", broken)
    with pytest.raises(UsageError, match="^%serve_connect: Serve could not start its HTTP proxies: The HTTP proxy "
                                         "could not start: no route to host$"):
        ip.run_line_magic("serve_connect", "--port 8300")
