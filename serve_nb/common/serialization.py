"""Pickling for the data plane, and user exceptions that survive the trip with their traceback."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import sys
import sysconfig
import traceback
from typing import Any, Callable, Iterator

from ray import cloudpickle  # Ray's vendored copy: the same reducers Ray itself uses

from serve_nb.exceptions import RemoteTraceback, ServeException

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ray_dir() -> str:
    import ray

    return os.path.dirname(os.path.abspath(ray.__file__)) + os.sep


_HIDDEN_DIRS = (_PACKAGE_DIR + os.sep, _ray_dir())


def dumps(obj: Any, buffer_callback: Callable[[pickle.PickleBuffer], Any] | None = None) -> bytes:
    """cloudpickle, so classes and functions defined in a notebook travel by value. ``buffer_callback``
    is pickle's: the buffers it takes (returns a false value for) stay out of the pickle."""
    return cloudpickle.dumps(obj, protocol=5, buffer_callback=buffer_callback)


#: A request or reply at least this large goes through Ray's object store instead of the channel. Measured
#: on the 2-core development machine, a handle call carrying a float32 array, median ms, channel / object
#: store: 1 MiB 1.6 / 3.1, 4 MiB 5.7 / 4.5, 10 MiB 16 / 4.1, 50 MiB 141 / 9.5. Below about 2 MiB the
#: socket wins (an actor call costs about a millisecond whatever it carries); above, the copies do.
LARGE_PAYLOAD_BYTES = 2 * 1024 * 1024
#: While deciding, buffers this large are only counted, not copied into the pickle.
_COUNT_ONLY_BYTES = 64 * 1024


def dumps_unless_large(obj: Any, limit: int = LARGE_PAYLOAD_BYTES) -> bytes | None:
    """The pickle of ``obj``, or None if it would be ``limit`` bytes or more (send it another way).

    Large buffers (numpy arrays, tensors, bytearrays: anything pickle protocol 5 can pass out of band) are
    counted without being copied, so deciding costs little even for a 50 MB array."""
    counted = 0

    def count_large(buffer: pickle.PickleBuffer) -> bool:
        nonlocal counted
        size = memoryview(buffer).nbytes
        if size < _COUNT_ONLY_BYTES:
            return True  # small: copied into the pickle, as usual
        counted += size
        return False

    payload = cloudpickle.dumps(obj, protocol=5, buffer_callback=count_large)
    if counted + len(payload) >= limit:
        return None
    return payload if not counted else cloudpickle.dumps(obj, protocol=5)  # some buffers were left out: again, whole


loads = pickle.loads


def _nothing() -> None:
    return None


def _same(value: Any) -> Any:
    return value


class _Discard:
    """A file that keeps nothing: the finding pass needs what pickling visits, not its bytes."""

    def write(self, data: Any) -> int:
        # Protocol 5 hands large contiguous buffers (numpy arrays of 64 KiB and more) over as PickleBuffers,
        # which have no len(): count their bytes instead.
        return memoryview(data).nbytes


def find_instances(obj: Any, types: tuple[type, ...]) -> list[Any]:
    """Every object of ``types`` reachable from ``obj`` as pickling sees it (inside any picklable object,
    not only containers), each once, in the order met; objects of ``types`` are not looked into."""
    found: list[Any] = []
    seen: set[int] = set()

    class Finder(cloudpickle.CloudPickler):
        def reducer_override(self, o: Any) -> Any:
            if isinstance(o, types):
                if id(o) not in seen:
                    seen.add(id(o))
                    found.append(o)
                return (_nothing, ())
            return super().reducer_override(o)

    Finder(_Discard(), protocol=5).dump(obj)
    return found


def dumps_replacing(obj: Any, replacement: Callable[[Any], Any]) -> bytes:
    """``dumps(obj)``, with each object for which ``replacement`` returns something other than None
    pickled as that instead (wherever it sits): how bound Applications become handles in arguments."""
    buffer = io.BytesIO()

    class Replacer(cloudpickle.CloudPickler):
        def reducer_override(self, o: Any) -> Any:
            new = replacement(o)
            if new is not None:
                return (_same, (new,))  # ``new`` itself is pickled as usual, as the one argument
            return super().reducer_override(o)

    Replacer(buffer, protocol=5).dump(obj)
    return buffer.getvalue()


def user_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` without serve_nb's own frames: what the user needs to see."""
    te = traceback.TracebackException.from_exception(exc)
    for part in _chain(te):
        part.stack = traceback.StackSummary.from_list(
            [f for f in part.stack if not f.filename.startswith(_HIDDEN_DIRS) and "asyncio" not in f.filename
             and "concurrent/futures" not in f.filename]
        )
    return "".join(te.format())


def _chain(te: traceback.TracebackException) -> list[traceback.TracebackException]:
    out, seen = [], set()
    cur: traceback.TracebackException | None = te
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


class RemoteUserError(ServeException):
    """Stands in for a user exception that could not be pickled; names the original type."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name


def pack_exception(exc: BaseException) -> bytes:
    tb = user_traceback(exc)
    try:
        blob = dumps(exc)
        pickle.loads(blob)  # unpicklable-on-arrival exceptions (odd __init__) are caught here
        return dumps(("exc", blob, tb))
    except Exception:
        name = f"{type(exc).__module__}.{type(exc).__qualname__}"
        return dumps(("text", name, str(exc), tb))


def unpack_exception(payload: bytes) -> BaseException:
    """Rebuild the user's exception (same type and message); its remote traceback is the __cause__."""
    kind, *rest = loads(payload)
    if kind == "exc":
        blob, tb = rest
        exc = loads(blob)
    else:
        name, message, tb = rest
        exc = RemoteUserError(name, message)
    exc.__cause__ = RemoteTraceback(tb)
    return exc


def remote_traceback_of(exc: BaseException) -> str | None:
    cause = exc.__cause__
    return cause.tb if isinstance(cause, RemoteTraceback) else None


def _is_installed(module_name: str) -> bool:
    """True if the module lives in site-packages or the standard library (importable anywhere)."""
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if module is None or path is None:
        return module_name in sys.builtin_module_names
    path = os.path.realpath(path)
    roots = {sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return any(root and path.startswith(os.path.realpath(root) + os.sep) for root in roots)


@contextlib.contextmanager
def user_code_by_value(target: Any) -> Iterator[None]:
    """While active, code from ``target``'s module is pickled by value, so replicas need not import it.

    Code from ``__main__`` (notebooks, scripts) travels by value anyway; this extends that to the
    user's own modules (a project file, a test module). Installed packages still go by reference.
    """
    module_name = getattr(target, "__module__", None) or "__main__"
    module = sys.modules.get(module_name)
    if module_name == "__main__" or module is None or module_name.split(".")[0] == "serve_nb" or _is_installed(module_name):
        yield
        return
    cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        cloudpickle.unregister_pickle_by_value(module)
