"""Code and config versions: decide whether a redeploy restarts, reconfigures or leaves replicas alone.

Which options go into which version is not decided here but by each option's ``OptionEffect``
in ``serve_nb.config``; this module only hashes.

A notebook re-run creates a new class object each time, and pickling two such objects gives
different bytes. So the code version is a structural hash: bytecode, constants, names, defaults,
closures and the user-defined globals the code refers to -- not line numbers, not object ids.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
import types
from typing import Any, Callable, Mapping

from serve_nb.config import DeploymentConfig, OptionEffect, option_values

Serializer = Callable[[Any], bytes]

#: Hex characters kept of each sha256: short enough to show in status, ample against collisions.
DIGEST_CHARS = 16

_SKIP_CLASS_ATTRS = frozenset(
    {"__dict__", "__weakref__", "__module__", "__qualname__", "__firstlineno__", "__static_attributes__"}
)
_SIMPLE = (int, float, complex, str, bytes, bool, type(None), type(Ellipsis))


def _is_user_defined(obj: Any, root_module: str | None) -> bool:
    """True for functions/classes whose definition could change between runs (notebook or root module)."""
    module = getattr(obj, "__module__", None)
    if module is None:
        return False
    if module == "__main__" or module == root_module:
        return True
    mod = sys.modules.get(module)
    return mod is None or getattr(mod, "__file__", None) is None and module not in sys.builtin_module_names


class _Hasher:
    def __init__(self, root_module: str | None, serialize: Serializer | None) -> None:
        self._h = hashlib.sha256()
        self._root = root_module
        self._serialize = serialize
        self._seen: dict[int, int] = {}

    def feed(self, tag: str, data: bytes | str = b"") -> None:
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        self._h.update(tag.encode())
        self._h.update(len(data).to_bytes(8, "little"))
        self._h.update(data)

    def digest(self) -> str:
        return self._h.hexdigest()

    def value(self, obj: Any) -> None:
        if isinstance(obj, _SIMPLE):
            self.feed("v", f"{type(obj).__name__}:{obj!r}")
            return
        key = id(obj)
        if key in self._seen:
            self.feed("ref", str(self._seen[key]))
            return
        self._seen[key] = len(self._seen)
        if isinstance(obj, types.CodeType):
            self.code(obj)
        elif isinstance(obj, (types.FunctionType,)):
            self.function(obj)
        elif isinstance(obj, (staticmethod, classmethod)):
            self.feed(type(obj).__name__)
            self.value(obj.__func__)
        elif isinstance(obj, property):
            self.feed("property")
            for part in (obj.fget, obj.fset, obj.fdel):
                self.value(part)
        elif isinstance(obj, types.ModuleType):
            self.feed("module", obj.__name__)
        elif inspect.isclass(obj):
            if _is_user_defined(obj, self._root):
                self.klass(obj)
            else:
                self.feed("class-ref", f"{obj.__module__}.{obj.__qualname__}")
        elif isinstance(obj, (types.BuiltinFunctionType, types.MethodWrapperType, types.WrapperDescriptorType)):
            self.feed("builtin", f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}")
        elif isinstance(obj, (list, tuple, set, frozenset)):
            self.feed(type(obj).__name__, str(len(obj)))
            items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
            for item in items:
                self.value(item)
        elif isinstance(obj, dict):
            self.feed("dict", str(len(obj)))
            for k, v in obj.items():
                self.value(k)
                self.value(v)
        elif isinstance(obj, types.MethodType):
            self.feed("method")
            self.value(obj.__func__)
        else:
            self.opaque(obj)

    def opaque(self, obj: Any) -> None:
        """Any other object: its serialized bytes if possible, else its type (best effort)."""
        if self._serialize is not None:
            try:
                self.feed("obj", hashlib.sha256(self._serialize(obj)).hexdigest())
                return
            except Exception:
                pass
        self.feed("type", f"{type(obj).__module__}.{type(obj).__qualname__}")

    def code(self, co: types.CodeType) -> None:
        self.feed("code", co.co_name)
        self.feed("bc", co.co_code)
        for attr in ("co_argcount", "co_posonlyargcount", "co_kwonlyargcount", "co_flags"):
            self.feed(attr, str(getattr(co, attr)))
        for attr in ("co_names", "co_varnames", "co_freevars", "co_cellvars"):
            self.feed(attr, "\0".join(getattr(co, attr)))
        self.feed("consts", str(len(co.co_consts)))
        for const in co.co_consts:
            self.value(const)

    def function(self, fn: types.FunctionType) -> None:
        self.feed("fn", fn.__qualname__)
        self.code(fn.__code__)
        self.value(fn.__defaults__)
        self.value(fn.__kwdefaults__)
        if fn.__closure__:
            for cell in fn.__closure__:
                try:
                    self.value(cell.cell_contents)
                except ValueError:  # empty cell
                    self.feed("empty-cell")
        self.globals_of(fn.__code__, fn.__globals__)

    def globals_of(self, co: types.CodeType, namespace: Mapping[str, Any]) -> None:
        """Hash the user-defined globals the code names (helpers and constants from other cells)."""
        for name in sorted(_global_names(co)):
            if name not in namespace:
                continue
            value = namespace[name]
            if isinstance(value, types.ModuleType):
                self.feed("g-mod", f"{name}={value.__name__}")
            elif isinstance(value, (types.FunctionType, type)):
                if _is_user_defined(value, self._root):
                    self.feed("g", name)
                    self.value(value)
                else:
                    self.feed("g-ref", f"{name}={value.__module__}.{value.__qualname__}")
            else:
                self.feed("g", name)
                self.value(value)

    def klass(self, cls: type) -> None:
        self.feed("class", cls.__qualname__)
        for base in cls.__bases__:
            self.value(base)
        for name in sorted(cls.__dict__):
            if name in _SKIP_CLASS_ATTRS:
                continue
            self.feed("attr", name)
            self.value(cls.__dict__[name])


def _global_names(co: types.CodeType) -> set[str]:
    names = set(co.co_names)
    for const in co.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def code_version(target: Any, serialize: Serializer | None = None) -> str:
    """A stable hash of a class or function's code, equal across re-definitions of identical code."""
    hasher = _Hasher(getattr(target, "__module__", None), serialize)
    if inspect.isclass(target):
        hasher.klass(target)
    else:
        hasher.value(target)
    return hasher.digest()[:DIGEST_CHARS]


def args_version(args: tuple[Any, ...], kwargs: Mapping[str, Any], serialize: Serializer) -> str:
    """Hash of constructor arguments (handles serialize to their deployment name, so stable)."""
    hasher = _Hasher(None, serialize)
    hasher.value(tuple(args))
    hasher.value(dict(sorted(kwargs.items())))
    return hasher.digest()[:DIGEST_CHARS]


def json_version(value: Any) -> str:
    """Hash of a JSON-able value (user_config, actor options), key-order independent."""
    text = json.dumps(value, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_CHARS]


def replica_version(code: str, args: str, config: DeploymentConfig) -> str:
    """The version a running replica carries: a change means the replica must be replaced.

    Hashes the code and constructor arguments with every RESTART option of ``config`` (see
    ``OptionEffect``). An explicit ``version`` stands in for the code, so users can keep replicas
    across code edits they declare compatible; it never hides an argument or resource change.
    """
    base = config.version if config.version is not None else code
    restart = json_version(option_values(config, OptionEffect.RESTART))
    return hashlib.sha256(f"{base}|{args}|{restart}".encode()).hexdigest()[:DIGEST_CHARS]


def config_version(config: DeploymentConfig) -> str:
    """The version of the settings replicas apply in place: a change reconfigures running
    replicas (the RECONFIGURE options of ``config``) instead of replacing them."""
    return json_version(option_values(config, OptionEffect.RECONFIGURE))
