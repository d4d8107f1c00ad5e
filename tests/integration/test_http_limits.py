"""The proxy holds against hostile HTTP clients: a real proxy over real HTTP on 127.0.0.1.

Serve runs with small limits of its own on its own port, so every case is fast and bounded.
"""

from __future__ import annotations

import socket
import time
from typing import Iterator

import pytest
import requests
from starlette.requests import Request
from starlette.responses import StreamingResponse

import serve_nb as serve
from helpers import ongoing_requests, wait_until

PORT = 8124
URL = f"http://127.0.0.1:{PORT}"
MAX_BODY = 1 << 20
MAX_HEADER_BYTES = 8 << 10
MAX_HEADER_COUNT = 50
HEADER_TIMEOUT_S = 1.0
#: Bounds every socket read, so a limit that does not hold fails the test instead of hanging it.
SOCKET_TIMEOUT_S = 10.0


@serve.deployment
class Counter:
    """Answers with the body's length and counts the requests that reached it."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, request: Request) -> str:
        self.calls += 1
        return f"got {len(await request.body())}"

    def count(self) -> int:
        return self.calls


CHUNK = 64 * 1024
#: Where the endless stream stops by itself, so that a proxy that does not hold it back fails the test
#: instead of filling the machine's memory.
STREAM_CAP = 256 << 20


@serve.deployment
class Endless:
    """Streams 64 KB chunks until the client leaves (or ``STREAM_CAP``), counting what it produced."""

    def __init__(self) -> None:
        self.produced = 0

    async def __call__(self, request: Request) -> StreamingResponse:
        async def chunks():
            while self.produced < STREAM_CAP:
                self.produced += CHUNK
                yield b"x" * CHUNK

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    def state(self) -> int:
        return self.produced


@pytest.fixture(scope="module")
def counter(ray_session) -> Iterator[serve.DeploymentHandle]:
    serve.shutdown()
    serve.start(http_options={
        "port": PORT, "max_body_bytes": MAX_BODY, "max_header_bytes": MAX_HEADER_BYTES,
        "max_header_count": MAX_HEADER_COUNT, "header_timeout_s": HEADER_TIMEOUT_S,
    })
    try:
        yield serve.run(Counter.bind(), name="limits", route_prefix="/count")
    finally:
        serve.shutdown()


def raw_exchange(request: bytes) -> bytes:
    """Send ``request`` on a fresh connection and read until the proxy closes it."""
    with socket.create_connection(("127.0.0.1", PORT), timeout=SOCKET_TIMEOUT_S) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_normal_request_still_works(counter):
    r = requests.post(f"{URL}/count", data=b"x" * 1000, timeout=SOCKET_TIMEOUT_S)
    assert (r.status_code, r.text) == (200, "got 1000")


def test_declared_oversized_body_is_413_without_reaching_the_replica(counter):
    before = counter.count.remote().result()
    head = f"POST /count HTTP/1.1\r\nhost: x\r\ncontent-length: {MAX_BODY + 1}\r\n\r\n".encode()
    reply = raw_exchange(head)  # the body is never sent: the answer comes from the header alone
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert counter.count.remote().result() == before


def test_chunked_body_growing_past_the_limit_is_413_without_reaching_the_replica(counter):
    before = counter.count.remote().result()

    def chunks() -> Iterator[bytes]:
        for _ in range(4):
            yield b"x" * (MAX_BODY // 2)

    r = requests.post(f"{URL}/count", data=chunks(), timeout=SOCKET_TIMEOUT_S)
    assert r.status_code == 413
    assert counter.count.remote().result() == before


def test_a_header_over_the_size_limit_is_431(counter):
    r = requests.get(f"{URL}/count", headers={"x-big": "a" * (MAX_HEADER_BYTES + 1)}, timeout=SOCKET_TIMEOUT_S)
    assert r.status_code == 431


def test_more_headers_than_the_limit_is_431(counter):
    headers = {f"x-h{i}": "1" for i in range(MAX_HEADER_COUNT + 1)}
    r = requests.get(f"{URL}/count", headers=headers, timeout=SOCKET_TIMEOUT_S)
    assert r.status_code == 431


def test_a_slowloris_client_is_closed_within_the_header_timeout(counter):
    with socket.create_connection(("127.0.0.1", PORT), timeout=SOCKET_TIMEOUT_S) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /count HTTP/1.1\r\n")
        reply = b""
        for byte in b"x-slow: " + b"a" * 1000:  # one byte at a time, never finishing the headers
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break  # the proxy closed the connection
            if _readable(sock):
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - start
        while chunk := _recv_or_empty(sock):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert HEADER_TIMEOUT_S <= elapsed < HEADER_TIMEOUT_S + 2


def _readable(sock: socket.socket) -> bool:
    import select

    return bool(select.select([sock], [], [], 0)[0])


def _recv_or_empty(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


def test_unknown_path_404_stays_short_whatever_the_path(counter):
    long_path = "/" + "z" * (MAX_HEADER_BYTES // 2)  # long, yet within the request-line limit
    r = requests.get(f"{URL}{long_path}", timeout=SOCKET_TIMEOUT_S)
    assert r.status_code == 404
    assert len(r.content) < 200 and "z" * 101 not in r.text and "/-/routes" in r.text


def test_a_client_that_does_not_read_a_streamed_response_holds_the_replica_back(counter):
    endless = serve.run(Endless.bind(), name="endless", route_prefix="/endless")
    with socket.create_connection(("127.0.0.1", PORT), timeout=SOCKET_TIMEOUT_S) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"GET /endless HTTP/1.1\r\nhost: x\r\n\r\n")  # and never reads the answer
        last: list[int] = []

        def stopped_growing() -> bool:
            produced = endless.state.remote().result()
            last.append(produced)
            return len(last) >= 5 and produced > 0 and len(set(last[-5:])) == 1

        wait_until(stopped_growing, timeout_s=30, interval_s=0.2, what="the stream to stop growing")
        # Socket buffers both ways, uvicorn's write buffer and one channel window: a few MB, not the cap.
        assert last[-1] < 32 << 20, f"{last[-1] >> 20} MB produced for a client that read nothing"
    # The proxy saw the client leave and cancelled the request: the replica is working on nothing.
    wait_until(lambda: ongoing_requests("endless", "Endless") == [0], what="the stream to end when the client left")
    serve.delete("endless")


def test_the_proxy_still_serves_after_the_hostile_clients(counter):
    wait_until(lambda: requests.get(f"{URL}/count", timeout=SOCKET_TIMEOUT_S).text == "got 0", what="a normal answer")
