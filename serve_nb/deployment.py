"""``@serve.deployment``, ``Deployment`` and ``Application``: what users declare, before anything runs.

Pure data with validation; nothing here touches Ray.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, Callable, overload

from serve_nb.config import AUTO_NUM_REPLICAS, DEPLOYMENT_OPTIONS, DeploymentConfig, check_option_names


class Application:
    """A deployment bound to its constructor arguments: the unit ``serve.run`` deploys.

    Arguments may contain other Applications (anywhere in lists, tuples and dicts);
    inside the replica those arrive as ``DeploymentHandle``s.
    """

    def __init__(self, deployment: "Deployment", args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._deployment = deployment
        self._args = args
        self._kwargs = kwargs

    @property
    def deployment(self) -> "Deployment":
        return self._deployment

    def __repr__(self) -> str:
        return f"Application(deployment={self._deployment.name!r})"


class Deployment:
    """A class or function plus its serving options. ``bind()`` it to get an Application."""

    def __init__(self, func_or_class: Callable[..., Any], options: dict[str, Any]) -> None:
        check_option_names(options)
        # What passed the check but is no serve_nb option is a Ray Serve option left unset (None): drop it.
        options = {k: v for k, v in options.items() if k in DEPLOYMENT_OPTIONS}
        name = options.get("name") or getattr(func_or_class, "__name__", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"Deployment name must be a non-empty string, got {name!r}.")
        if "#" in name or "/" in name:
            raise ValueError(f"Deployment name may not contain '#' or '/', got {name!r}.")
        self._func_or_class = func_or_class
        # Own copies: later changes to the caller's dicts must not leak into this deployment.
        owned = {k: copy.deepcopy(v) if isinstance(v, (dict, list)) else v for k, v in options.items()}
        self._options = {**owned, "name": name}
        self._config = DeploymentConfig.from_options(self._options)
        self._check_user_config()

    def _check_user_config(self) -> None:
        if self._config.user_config is None:
            return
        if not inspect.isclass(self._func_or_class):
            raise ValueError(
                f"Deployment '{self.name}' is a function; user_config needs a class with a "
                "reconfigure(self, config) method."
            )
        if not callable(getattr(self._func_or_class, "reconfigure", None)):
            raise ValueError(
                f"user_config was given for deployment '{self.name}', but class "
                f"{self._func_or_class.__name__} has no reconfigure(self, config) method to receive it."
            )

    # Read-only views, named as in Ray Serve.
    @property
    def name(self) -> str:
        return self._options["name"]

    @property
    def func_or_class(self) -> Callable[..., Any]:
        return self._func_or_class

    @property
    def config(self) -> DeploymentConfig:
        return self._config

    @property
    def num_replicas(self) -> int | None:
        return self._config.num_replicas

    @property
    def user_config(self) -> Any:
        return self._config.user_config

    @property
    def max_ongoing_requests(self) -> int:
        return self._config.max_ongoing_requests

    @property
    def max_queued_requests(self) -> int:
        return self._config.max_queued_requests

    @property
    def ray_actor_options(self) -> dict[str, Any]:
        return dict(self._config.ray_actor_options)

    @property
    def options_in_code(self) -> dict[str, Any]:
        """The options this deployment was given (by the decorator and ``.options()``), as given: what
        ``serve_nb build`` writes into a config file for operators to change."""
        return {k: copy.deepcopy(v) for k, v in self._options.items() if k != "name"}

    @property
    def version(self) -> str | None:
        return self._config.version

    @property
    def is_class(self) -> bool:
        return inspect.isclass(self._func_or_class)

    def options(self, func_or_class: Callable[..., Any] | None = None, **options: Any) -> "Deployment":
        """A copy with some options (or, as in Ray Serve, the class or function) replaced; unspecified ones keep
        their values. Unknown options raise TypeError before anything is copied."""
        if func_or_class is not None and not callable(func_or_class):
            raise TypeError(
                f"Deployment.options() takes options as keywords (e.g. .options(num_replicas=2)); its one positional "
                f"argument is a replacement class or function, got {type(func_or_class).__name__}."
            )
        check_option_names(options)
        merged = {**self._options, **options}
        # A fixed count and autoscaling exclude each other: setting one drops the other it replaces
        # (but "auto" keeps its autoscaling settings, and settings keep an "auto" count).
        sets_count = "num_replicas" in options and "autoscaling_config" not in options
        if sets_count and options["num_replicas"] != AUTO_NUM_REPLICAS:
            merged.pop("autoscaling_config", None)
        sets_autoscaling = "autoscaling_config" in options and "num_replicas" not in options
        if sets_autoscaling and self._options.get("num_replicas") != AUTO_NUM_REPLICAS:
            merged.pop("num_replicas", None)
        if "name" not in options:
            merged["name"] = self.name
        return Deployment(self._func_or_class if func_or_class is None else func_or_class, merged)

    def bind(self, *args: Any, **kwargs: Any) -> Application:
        return Application(self, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"Deployment '{self.name}' cannot be called or constructed directly. "
            f"Use {self.name}.bind(...) and serve.run(...), then call it through the returned handle."
        )

    def __repr__(self) -> str:
        return f"Deployment(name={self.name!r})"


_NO_NAME: Any = object()


@overload
def deployment(_func_or_class: Callable[..., Any]) -> Deployment: ...


@overload
def deployment(_func_or_class: None = None, **options: Any) -> Callable[[Callable[..., Any]], Deployment]: ...


def deployment(_func_or_class: Any = None, name: Any = _NO_NAME, **options: Any) -> Any:
    """Turn a class or function into a Deployment; usable bare (``@serve.deployment``), with options, or
    with the name first, as Ray Serve allows (``@serve.deployment("counter", num_replicas=2)``).

    The class or function is pickled once here, so one that cannot travel to its replicas (it holds a
    lock, a socket, an open file) is refused at the line that defines it, as in Ray Serve, rather than
    at deploy time."""
    if isinstance(_func_or_class, str):
        if name is not _NO_NAME:
            raise TypeError("@serve.deployment got a name both as its first argument and as name=; give one.")
        _func_or_class, name = None, _func_or_class
    if name is not _NO_NAME:
        options["name"] = name
    check_option_names(options)

    def wrap(target: Any) -> Deployment:
        if isinstance(target, Deployment):
            return target.options(**options)
        if not (inspect.isclass(target) or inspect.isfunction(target) or inspect.ismethod(target) or callable(target)):
            raise TypeError(f"@serve.deployment must decorate a class or a function, got {type(target).__name__}.")
        _check_serializable(target)
        return Deployment(target, dict(options))

    if _func_or_class is not None:
        return wrap(_func_or_class)
    return wrap


def _check_serializable(target: Any) -> None:
    from serve_nb.common.serialization import dumps, user_code_by_value

    try:
        with user_code_by_value(target):
            dumps(target)
    except Exception as exc:
        import io

        from ray.util import inspect_serializability

        trace = io.StringIO()
        with user_code_by_value(target):
            inspect_serializability(target, print_file=trace)  # names the captured value that fails
        raise TypeError(
            f"Could not serialize the deployment {target!r}: {type(exc).__name__}: {exc}\n{trace.getvalue()}\n"
            "A deployment is sent to its replicas by pickling: create locks, sockets, files and clients inside "
            "__init__, not as class attributes or globals it captures."
        ) from exc
