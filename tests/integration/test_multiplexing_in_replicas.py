"""``@serve.multiplexed`` in real replicas: the model id reaches user code from handles and HTTP, and requests
follow the replicas holding their model, so models are not loaded again and again."""

from __future__ import annotations

import requests

import serve_nb as serve
from helpers import URL, wait_until


@serve.deployment(num_replicas=2, max_ongoing_requests=8, ray_actor_options={"num_cpus": 0.1})
class Models:
    """One model per replica at most: a request routed to the wrong replica would evict and reload."""

    def __init__(self) -> None:
        self.loads: list[str] = []

    @serve.multiplexed(max_num_models_per_replica=1)
    async def get_model(self, model_id: str) -> str:
        self.loads.append(model_id)
        return f"weights-of-{model_id}"

    async def __call__(self, request=None) -> dict:
        model_id = serve.get_multiplexed_model_id()
        model = await self.get_model(model_id) if model_id else None
        return {"replica": serve.get_replica_context().replica_id, "model_id": model_id, "model": model,
                "loads": list(self.loads)}


def test_two_models_alternating_over_two_replicas_are_each_loaded_once(serve_instance):
    handle = serve.run(Models.bind(), name="models", route_prefix="/models")
    answers = [handle.options(multiplexed_model_id=m).remote().result(timeout_s=30) for m in ["m1", "m2"] * 10]
    assert {a["model"] for a in answers} == {"weights-of-m1", "weights-of-m2"}
    by_model = {m: {a["replica"] for a in answers if a["model_id"] == m} for m in ("m1", "m2")}
    assert len(by_model["m1"]) == 1 and len(by_model["m2"]) == 1 and by_model["m1"] != by_model["m2"]
    last = {a["replica"]: a["loads"] for a in answers}
    assert sorted(last.values()) == [["m1"], ["m2"]]  # one load per replica over 20 requests: no reload storm


def test_the_http_header_routes_by_the_models_the_replicas_reported(serve_instance):
    handle = serve.run(Models.bind(), name="models", route_prefix="/models")
    holder = {m: handle.options(multiplexed_model_id=m).remote().result(timeout_s=30)["replica"] for m in ("a", "b")}
    # The proxy's router never sent these models anywhere: it can only follow what the replicas reported.
    feed_models = lambda: serve.feed.get(serve.feed.replicas("models", "Models")).models  # noqa: E731
    wait_until(lambda: sorted(feed_models().values()) == [("a",), ("b",)], what="both replicas' models on the feed")
    for model in ("a", "b", "a", "b"):
        answer = requests.get(f"{URL}/models", headers={"serve_multiplexed_model_id": model}, timeout=30).json()
        assert (answer["model_id"], answer["replica"], answer["loads"]) == (model, holder[model], [model])
    plain = requests.get(f"{URL}/models", timeout=30).json()
    assert plain["model_id"] == "" and plain["model"] is None


def test_a_streamed_call_carries_its_model_id(serve_instance):
    @serve.deployment(ray_actor_options={"num_cpus": 0.1})
    class Chat:
        async def tokens(self, n: int):
            for i in range(n):
                yield f"{serve.get_multiplexed_model_id()}:{i}"

    handle = serve.run(Chat.bind(), name="chat", route_prefix=None)
    stream = handle.options(stream=True, multiplexed_model_id="llama").tokens.remote(3)
    assert list(stream) == ["llama:0", "llama:1", "llama:2"]
