"""``@serve.multiplexed``: many models (one per customer, language, fine-tune) on a few replicas, each
replica keeping the ones it used last.

The decorated ``async def get_model(self, model_id)`` loads a model; calling it returns the loaded model
when this replica (this instance) holds it, else loads it, keeping at most
``max_num_models_per_replica`` (``-1``: no limit) and evicting the least recently used, whose ``__del__``
(sync or async) is called so it can free memory at once. One load runs at a time per replica; callers
asking for a model that is being loaded wait for that load rather than start another.

Plain asyncio, so it is tested without Ray.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import time
import warnings
from typing import Any, Awaitable, Callable

from serve_nb.data import metrics
from serve_nb.data.context import register_model_cache

DEFAULT_MAX_NUM_MODELS_PER_REPLICA = 3


class ModelCache:
    """One replica's (or one function's) loaded models, most recently used last."""

    def __init__(self, load: Callable[[str], Awaitable[Any]], max_models: int) -> None:
        self._load = load
        self.max_models = max_models
        self.models: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._loading: dict[str, asyncio.Future[Any]] = {}
        self._one_load = asyncio.Lock()

    @property
    def model_ids(self) -> list[str]:
        """Loaded models, least recently used first, then those being loaded: what routers should prefer
        this replica for (a model being loaded counts, or requests arriving meanwhile would load it elsewhere)."""
        return list(self.models) + [m for m in self._loading if m not in self.models]

    async def get(self, model_id: str) -> Any:
        metrics.model_requested()
        if model_id in self.models:
            self.models.move_to_end(model_id)
            return self.models[model_id]
        pending = self._loading.get(model_id)
        if pending is not None:
            return await asyncio.shield(pending)  # another caller is loading it: share that load
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._loading[model_id] = future
        try:
            async with self._one_load:
                if self.max_models != -1:
                    while len(self.models) >= self.max_models:
                        await self._evict_oldest()
                began = time.perf_counter()
                model = await self._load(model_id)
            self.models[model_id] = model
            metrics.model_loaded(model_id, (time.perf_counter() - began) * 1000, len(self.models))
            future.set_result(model)
            return model
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()  # the loading caller left: those sharing its load see it cancelled
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: callers that share it re-raise it themselves
            raise
        finally:
            self._loading.pop(model_id, None)

    async def _evict_oldest(self) -> None:
        model_id, model = self.models.popitem(last=False)
        began = time.perf_counter()
        release = getattr(model, "__del__", None)
        if release is not None:
            result = release()
            if inspect.isawaitable(result):
                await result
        metrics.model_unloaded(model_id, (time.perf_counter() - began) * 1000, len(self.models))
        with warnings.catch_warnings():
            # The last reference goes here, and Python calls __del__ once more; an async one then makes a
            # coroutine nobody awaits. It already ran above, so that second call's warning is noise.
            warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
            del model, release


def _check_max_models(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("max_num_models_per_replica must be an integer.")
    if value != -1 and value <= 0:
        raise ValueError("max_num_models_per_replica must be positive.")
    return value


def multiplexed(
    func: Callable[..., Any] | None = None, max_num_models_per_replica: int = DEFAULT_MAX_NUM_MODELS_PER_REPLICA
) -> Any:
    """Cache the models an ``async def`` loader returns, per replica, least recently used out first."""
    if func is not None:
        _check_loader(func)
    max_models = _check_max_models(max_num_models_per_replica)

    def decorate(loader: Callable[..., Any]) -> Callable[..., Any]:
        _check_loader(loader)
        attr = f"__serve_nb_models_{loader.__name__}"
        own: list[ModelCache] = []  # a plain function's cache

        @functools.wraps(loader)
        async def wrapper(*args: Any) -> Any:
            if len(args) == 2 and getattr(type(args[0]), loader.__name__, None) is wrapper:
                owner, model_id = args
                cache = owner.__dict__.get(attr)
                if cache is None:
                    cache = ModelCache(functools.partial(loader, owner), max_models)
                    setattr(owner, attr, cache)
                    register_model_cache(cache)
            elif len(args) == 1:
                model_id = args[0]
                if not own:
                    own.append(ModelCache(loader, max_models))
                    register_model_cache(own[0])
                cache = own[0]
            else:
                raise TypeError(
                    f"Functions decorated with @serve.multiplexed take exactly one argument, the model ID (str); "
                    f"got {len(args)} arguments."
                )
            if not isinstance(model_id, str):
                raise TypeError("The model ID must be a string.")
            if not model_id:
                raise ValueError("The model ID cannot be empty.")
            return await cache.get(model_id)

        return wrapper

    return decorate(func) if func is not None else decorate


def _check_loader(loader: Any) -> None:
    if not callable(loader):
        raise TypeError("The `multiplexed` decorator must be used with a function or method.")
    if not inspect.iscoroutinefunction(loader):
        raise TypeError("@serve.multiplexed can only be used to decorate async functions or methods.")
    params = inspect.signature(loader).parameters
    if not 1 <= len(params) <= 2:
        raise TypeError(
            "@serve.multiplexed can only be used to decorate functions or methods with at least one "
            "'model_id: str' argument."
        )
