"""HTTP load generation for the benchmark: ``wrk`` when installed, else a Python client (and the report says so)."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

WRK_POST = """wrk.method = "POST"
wrk.body = string.rep("x", {size})
wrk.headers["Content-Type"] = "application/octet-stream"
"""


def client_name() -> str:
    return "wrk" if shutil.which("wrk") else "python (httpx) fallback"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def http_load(url: str, connections: int, seconds: float, body_bytes: int = 0) -> dict[str, float]:
    """Closed-loop load: ``connections`` clients each send the next request when the last answered.

    Returns ``rps``, ``p50_ms``, ``p99_ms`` and ``errors`` (non-2xx/3xx answers plus socket errors).
    """
    if shutil.which("wrk"):
        return _wrk(url, connections, seconds, body_bytes)
    return asyncio.run(_python_load(url, connections, seconds, body_bytes))


def _wrk(url: str, connections: int, seconds: float, body_bytes: int) -> dict[str, float]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "30s"]
    with tempfile.TemporaryDirectory() as tmp:
        if body_bytes:
            script = Path(tmp) / "post.lua"
            script.write_text(WRK_POST.format(size=body_bytes))
            cmd += ["-s", str(script)]
        text = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    return parse_wrk(text)


def parse_wrk(text: str) -> dict[str, float]:
    def ms(value: str) -> float:
        number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
        return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]

    out: dict[str, float] = {}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", text):
        out["rps"] = float(m.group(1))
    if m := re.search(r"\s50%\s+(\S+)", text):
        out["p50_ms"] = ms(m.group(1))
    if m := re.search(r"\s99%\s+(\S+)", text):
        out["p99_ms"] = ms(m.group(1))
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        errors += sum(int(g) for g in m.groups())
    out["errors"] = errors
    return out


async def _python_load(url: str, connections: int, seconds: float, body_bytes: int) -> dict[str, float]:
    """The fallback: slower than wrk, so its figures are a lower bound for the server."""
    import httpx

    body = b"x" * body_bytes
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    r = await (client.post(url, content=body) if body_bytes else client.get(url))
                    errors += r.status_code >= 400
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "errors": errors,
    }


def websocket_round_trips(url: str, messages: int, warmup: int = 100, size: int = 16) -> dict[str, float]:
    """Median and p99 round trip of a ``size``-byte text frame echoed on one WebSocket, ``messages`` sent
    one after another (each once the last came back), after ``warmup`` unmeasured ones. The client is the
    ``websockets`` package (what uvicorn itself uses) on a real socket, with its default settings."""
    return asyncio.run(_websocket_round_trips(url, messages, warmup, size))


async def _websocket_round_trips(url: str, messages: int, warmup: int, size: int) -> dict[str, float]:
    from websockets.asyncio.client import connect

    text = "x" * size
    latencies: list[float] = []
    async with connect(url, open_timeout=60) as ws:
        for i in range(warmup + messages):
            start = time.perf_counter()
            await ws.send(text)
            if await ws.recv() != text:
                raise AssertionError("the WebSocket echo answered something else")
            if i >= warmup:
                latencies.append(time.perf_counter() - start)
    return {"p50_ms": percentile(latencies, 0.5) * 1e3, "p99_ms": percentile(latencies, 0.99) * 1e3}

