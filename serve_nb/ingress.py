"""``@serve.ingress(app)``: serve a FastAPI or Starlette app (or any ASGI app) from a deployment class.

Routes defined on the class's methods run with that replica's ``self``. A builder function that
returns the app is accepted too; it is then called on each replica.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable, TypeVar

C = TypeVar("C")

ASGI_ATTR = "__serve_nb_asgi__"


def ingress(app: Any) -> Callable[[C], C]:
    """Attach ``app`` (an ASGI app, or a zero-argument builder returning one) to a deployment class."""
    if app is None or not callable(app):
        raise TypeError(f"@serve.ingress needs a FastAPI/Starlette/ASGI app or a builder function, got {app!r}.")

    def decorator(cls: C) -> C:
        from serve_nb.deployment import Deployment

        if isinstance(cls, Deployment):
            raise TypeError("Put @serve.ingress(app) below @serve.deployment (apply it to the class first).")
        if not inspect.isclass(cls):
            raise TypeError(f"@serve.ingress must decorate a class, got {type(cls).__name__}.")
        if "__call__" in cls.__dict__:
            raise ValueError(
                f"Class {cls.__name__} defines __call__; with @serve.ingress, HTTP requests go to the app's routes. "
                "Remove __call__ or drop @serve.ingress."
            )
        _resolve_route_annotations(app, cls)
        setattr(cls, ASGI_ATTR, app)
        return cls

    return decorator


def _resolve_route_annotations(app: Any, cls: type) -> None:
    """Turn string annotations of method routes into objects now, while the defining module's names exist.

    Replicas rebuild those routes around bound methods and FastAPI re-reads the annotations there,
    where a by-value copy of the function only carries the globals its code uses.
    """
    methods = {id(fn) for klass in cls.__mro__ for fn in vars(klass).values() if inspect.isfunction(fn)}
    for route in getattr(app, "routes", ()):
        endpoint = getattr(route, "endpoint", None)
        if endpoint is not None and id(endpoint) in methods:
            try:
                endpoint.__annotations__ = typing.get_type_hints(endpoint, include_extras=True)
            except Exception:  # unresolvable names: leave them for FastAPI to report
                pass


def is_builder(app: Any) -> bool:
    """A builder is a plain function taking no arguments (an ASGI app takes scope, receive, send)."""
    if not inspect.isfunction(app):
        return False
    params = [p for p in inspect.signature(app).parameters.values() if p.default is p.empty]
    return len(params) == 0
