"""The request form generated from the ingress's signature: query fields with types and defaults, a JSON body
when an argument is not a plain value, FastAPI routes, the generic form for a raw Request or an unknown ingress,
and the handle-call form for apps without HTTP (pure: no Ray, no FastAPI server)."""

from __future__ import annotations

import pytest

from serve_nb.notebook.request_form import ASGI_ATTR, form_spec


def test_an_unknown_ingress_gets_the_generic_form():
    assert form_spec(None) == {"kind": "generic", "routes": []}


def test_a_raw_starlette_request_gets_the_generic_form():
    from starlette.requests import Request

    class Echo:
        async def __call__(self, request: Request) -> str:
            return "x"

    def untyped(request):  # noqa: ANN001 - the name alone says it is the request
        return "x"

    assert form_spec(Echo)["kind"] == "generic"
    assert form_spec(untyped)["kind"] == "generic"


def test_plain_parameters_become_typed_query_fields_with_their_defaults():
    class Model:
        def __call__(self, text: str, times: int = 2, scale: float = 0.5, loud: bool = False) -> str:
            """Repeat the text."""
            return text * times

    (route,) = form_spec(Model)["routes"]
    assert route["method"] == "GET" and route["path"] == "/" and not route["body"]
    assert route["doc"] == "Repeat the text."
    assert route["fields"] == [
        {"name": "text", "type": "str", "default": None, "required": True},
        {"name": "times", "type": "int", "default": 2, "required": False},
        {"name": "scale", "type": "float", "default": 0.5, "required": False},
        {"name": "loud", "type": "bool", "default": False, "required": False}]


def test_a_structured_argument_asks_for_a_json_body():
    def predict(features: dict, top_k: int = 3) -> list:
        return []

    (route,) = form_spec(predict)["routes"]
    assert route["method"] == "POST" and route["body"] and [f["name"] for f in route["fields"]] == ["top_k"]


def test_a_deployment_is_looked_through_to_its_class():
    class Deployment:  # the shape of serve_nb.Deployment: func_or_class
        def __init__(self, target):
            self.func_or_class = target

    def hello(name: str = "world") -> str:
        return name

    assert form_spec(Deployment(hello))["routes"][0]["fields"][0]["default"] == "world"


def test_fastapi_routes_each_become_a_form_with_query_fields_and_body():
    fastapi = pytest.importorskip("fastapi")
    pydantic = pytest.importorskip("pydantic")

    class Item(pydantic.BaseModel):
        name: str

    app = fastapi.FastAPI()

    @app.get("/items/{item_id}")
    def read(item_id: int, q: str = "all") -> dict:
        """Read one item."""
        return {}

    @app.post("/items")
    def create(item: Item) -> dict:
        return {}

    class Api:
        pass

    setattr(Api, ASGI_ATTR, app)
    spec = form_spec(Api)
    assert spec["kind"] == "routes"
    by_path = {r["path"]: r for r in spec["routes"]}
    assert by_path["/items/{item_id}"]["method"] == "GET"
    assert by_path["/items/{item_id}"]["fields"] == [{"name": "q", "type": "str", "default": "all", "required": False}]
    assert by_path["/items/{item_id}"]["doc"] == "Read one item."
    assert by_path["/items"]["method"] == "POST" and by_path["/items"]["body"]


def test_without_http_the_form_calls_through_the_handle_with_the_classes_methods():
    class Model:
        def __call__(self, x: int) -> int:
            return x

        def predict(self, x: int) -> int:
            return x

        def _private(self) -> None:
            pass

    assert form_spec(Model, has_http=False) == {"kind": "handle", "methods": ["__call__", "predict"], "handle": True}
    assert form_spec(None, has_http=False)["methods"] == ["__call__"]
