"""The replica's Unix socket is reachable by its own user only, and what dead replicas left is swept."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from typing import Iterator

import pytest

from serve_nb.data.channel import ChannelClient, ChannelServer
from serve_nb.data.channel import sockdir
from channel_peer import KEY
from test_channel_round_trip import FakeReplica, call


@pytest.fixture
def base() -> Iterator[str]:
    """A short base directory (pytest's tmp_path can exceed a Unix socket path's 107 bytes)."""
    path = tempfile.mkdtemp(prefix="sn-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_the_socket_is_in_a_0700_directory_of_its_own_and_is_0600(base: str) -> None:
    async def main() -> None:
        server = ChannelServer(FakeReplica(), KEY)
        address = await server.start("127.0.0.1", node_id="n", socket_base=base)
        try:
            assert address.uds_path is not None
            directory = os.path.dirname(address.uds_path)
            assert os.path.dirname(directory) == base
            assert os.path.basename(directory).startswith(f"serve_nb-{os.getpid()}-")
            assert mode(directory) == 0o700 and mode(address.uds_path) == 0o600
            assert stat.S_ISSOCK(os.lstat(address.uds_path).st_mode)
            client = ChannelClient(address, KEY, local_node_id="n")
            assert await client.call(call("echo", 1)) == ((1,), {})
            assert client._conn is not None
            assert client._conn.transport.get_extra_info("socket").family == socket.AF_UNIX
            client.close()
        finally:
            await server.close_gracefully()
        assert os.listdir(base) == []  # the directory goes with the socket

    asyncio.run(main())


def test_a_dead_replicas_socket_directory_is_removed_when_the_next_one_starts(base: str) -> None:
    pid = dead_pid()
    stale = os.path.join(base, f"serve_nb-{pid}-abcd1234")
    os.mkdir(stale, 0o700)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(os.path.join(stale, sockdir.SOCKET_NAME))  # as a crashed replica leaves it
    alive = os.path.join(base, f"serve_nb-{os.getpid()}-live5678")
    os.mkdir(alive, 0o700)
    unrelated = os.path.join(base, "something-else")
    os.mkdir(unrelated)

    directory, _ = sockdir.make_socket_path(base)

    assert not os.path.exists(stale)
    assert os.path.isdir(alive) and os.path.isdir(unrelated) and os.path.isdir(directory)


def test_an_old_style_socket_file_of_a_dead_pid_is_removed(base: str) -> None:
    dead = os.path.join(base, f"serve_nb-{dead_pid()}-34751.sock")
    live = os.path.join(base, f"serve_nb-{os.getpid()}-34752.sock")
    for path in (dead, live):
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(path)
    assert sockdir.sweep_stale(base) == [dead]
    assert not os.path.exists(dead) and os.path.exists(live)


def test_a_base_too_long_for_a_socket_path_falls_back_to_the_temp_dir(base: str) -> None:
    deep = os.path.join(base, "d" * 100)
    os.mkdir(deep)
    directory, path = sockdir.make_socket_path(deep)
    try:
        assert os.path.dirname(directory) == tempfile.gettempdir() and len(path) <= sockdir.MAX_SOCKET_PATH
    finally:
        sockdir.remove_dir(directory)
