"""The request form an app widget offers, generated from its ingress's signature (in the spirit of Gradio).

``form_spec(ingress, has_http)`` turns the ingress deployment (a ``Deployment``, an ``Application``, a class or
a function) into JSON the front end draws as a form:

- a FastAPI/Starlette ingress (``@serve.ingress(app)``): one entry per route (method, path, query parameters
  with their types and defaults, a JSON body when an endpoint takes one);
- a class ``__call__`` or a function: its parameters as query parameters, or a JSON body when one is not a
  plain value; a parameter that is the starlette ``Request`` (or nothing known) gives the generic form
  (method, path, body);
- an app without HTTP (``--no-http``): the handle-call form (method name and JSON arguments).

Pure: only ``inspect``; nothing is imported from FastAPI.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

#: The attribute ``serve_nb.ingress`` sets on a class with an ASGI app (``serve_nb.ingress.ASGI_ATTR``).
ASGI_ATTR = "__serve_nb_asgi__"
SIMPLE_TYPES = {int: "int", float: "float", bool: "bool", str: "str"}
GENERIC: dict[str, Any] = {"kind": "generic", "routes": []}


def _target(ingress: Any) -> Any:
    """The class or function behind a Deployment / Application / bound thing."""
    deployment = getattr(ingress, "deployment", None)
    if deployment is not None and hasattr(deployment, "func_or_class"):
        ingress = deployment
    return getattr(ingress, "func_or_class", ingress)


def _is_request(param: inspect.Parameter) -> bool:
    annotation = param.annotation
    name = getattr(annotation, "__name__", str(annotation))
    return name in ("Request", "starlette.requests.Request") or (
        annotation is inspect.Parameter.empty and param.name in ("request", "req"))


def _field(param: inspect.Parameter) -> dict[str, Any] | None:
    """A query field for a plain-valued parameter; None when it needs a JSON body."""
    annotation = param.annotation
    if annotation is inspect.Parameter.empty:
        kind = "str" if param.default is inspect.Parameter.empty else SIMPLE_TYPES.get(type(param.default), None)
    elif isinstance(annotation, str):
        kind = annotation if annotation in SIMPLE_TYPES.values() else None
    else:
        kind = SIMPLE_TYPES.get(annotation)
    if kind is None:
        return None
    default = None if param.default is inspect.Parameter.empty else param.default
    return {"name": param.name, "type": kind, "default": default if isinstance(default, (int, float, str, bool))
            else None, "required": param.default is inspect.Parameter.empty}


def _parameters(func: Callable[..., Any], path: str = "") -> tuple[list[dict[str, Any]], bool, bool]:
    """(query fields, takes a JSON body, takes the raw Request) of ``func``; path parameters are skipped."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return [], False, True
    fields: list[dict[str, Any]] = []
    body = raw = False
    for param in signature.parameters.values():
        if param.name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if "{" + param.name + "}" in path or "{" + param.name + ":" in path:
            continue
        if _is_request(param):
            raw = True
            continue
        field = _field(param)
        if field is None:
            body = True
        else:
            fields.append(field)
    return fields, body, raw


def _routes(app: Any) -> list[dict[str, Any]]:
    """The routes of a FastAPI/Starlette app (a builder function is not called: its routes are unknown)."""
    routes = []
    for route in getattr(app, "routes", []) or []:
        endpoint, path = getattr(route, "endpoint", None), getattr(route, "path", None)
        methods = sorted(m for m in (getattr(route, "methods", None) or []) if m != "HEAD")
        if endpoint is None or path is None or not methods or path.startswith(("/docs", "/openapi", "/redoc")):
            continue
        fields, body, _raw = _parameters(endpoint, path)
        routes.append({"method": methods[0], "path": path, "fields": fields, "body": body,
                       "doc": (inspect.getdoc(endpoint) or "").split("\n")[0]})
    return routes


def form_spec(ingress: Any, has_http: bool = True) -> dict[str, Any]:
    """The form for ``ingress`` (None: unknown; the generic form, or the handle form without HTTP)."""
    target = _target(ingress) if ingress is not None else None
    if not has_http:
        methods = ["__call__"]
        if inspect.isclass(target):
            methods += sorted(n for n, v in vars(target).items() if callable(v) and not n.startswith("_"))
        return {"kind": "handle", "methods": methods, "handle": True}
    if target is None:
        return dict(GENERIC)
    asgi = getattr(target, ASGI_ATTR, None)
    if asgi is not None:
        routes = _routes(asgi)
        return {"kind": "routes", "routes": routes} if routes else dict(GENERIC)
    call = getattr(target, "__call__", None) if inspect.isclass(target) else target
    if call is None or not callable(call):
        return dict(GENERIC)
    fields, body, raw = _parameters(call)
    if raw or (not fields and not body and inspect.isclass(target) and "__call__" not in vars(target)):
        return dict(GENERIC)
    method = "POST" if body else "GET"
    return {"kind": "routes", "routes": [{"method": method, "path": "/", "fields": fields, "body": body,
                                          "doc": (inspect.getdoc(call) or "").split("\n")[0]}]}
