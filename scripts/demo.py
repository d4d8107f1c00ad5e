"""The main job: start a local Ray, deploy an example app, print its URL and answer a sample request.

Run with ``make demo``; ``--keep`` keeps it serving until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request

import serve_nb as serve
from serve_nb.handle import DeploymentHandle
from starlette.requests import Request


# Half a CPU each, so the three replicas fit on a 2-core laptop (Ray Serve's default is one CPU).
@serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0.5})
class WordStats:
    """A stand-in for a model: cheap to load, does a little work per request."""

    def __call__(self, text: str) -> dict:
        words = text.split()
        return {"words": len(words), "longest": max(words, key=len) if words else ""}


@serve.deployment(ray_actor_options={"num_cpus": 0.5})
class Api:
    """The ingress: parses HTTP, calls the model through a handle, answers JSON."""

    def __init__(self, stats: DeploymentHandle) -> None:
        self.stats = stats

    async def __call__(self, request: Request) -> dict:
        text = (await request.json()).get("text", "")
        return {"text": text, **(await self.stats.remote(text))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep serving until Ctrl-C")
    args = parser.parse_args()

    started = time.perf_counter()
    serve.start()
    print(f"Local Ray and serve_nb are up ({time.perf_counter() - started:.1f}s).")
    started = time.perf_counter()
    serve.run(Api.bind(WordStats.bind()), name="demo", route_prefix="/stats")
    print(f"Deployed app 'demo' ({time.perf_counter() - started:.2f}s): {serve.status().applications['demo'].status}")

    url = "http://127.0.0.1:8000/stats"
    body = {"text": "serve a notebook cell as a scalable endpoint"}
    print(f"\nURL:     {url}")
    print(f"Request: curl -s -X POST {url} -H 'content-type: application/json' -d '{json.dumps(body)}'")
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        print(f"Answer:  {resp.status} {resp.read().decode()}")

    if args.keep:
        print("\nServing; press Ctrl-C to stop.")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    serve.shutdown()


if __name__ == "__main__":
    main()
