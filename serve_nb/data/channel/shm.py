"""Large call arguments through shared memory, between a caller and a replica on the same machine.

A socket copies a payload four times (into the pickle, into the kernel, out of it, out of the pickle) and
Ray's object store still goes through its raylet. Here the caller pickles with protocol 5, copies each large
buffer (an array's data) once into a shared-memory segment of its own, and sends only the small rest over
the channel with where the buffers lie. The replica maps the segment read-only and unpickles straight from
it: numpy arrays arrive without a copy, read-only, as from Ray's object store.

A segment is used by one call at a time. It is reused only after the replica said RELEASE, which it does
once nothing refers to the mapping any more (the user's code may keep an argument after the call). A
segment whose connection breaks before its RELEASE is unlinked, never reused: the replica may still read it.
Segments are files ``/dev/shm/serve_nb-<uid>-<pid>-<n>`` (mode 0600); the replica opens only names of that
form, read-only, within their size. Files of processes that died are removed by the next arena created.
"""

from __future__ import annotations

import mmap
import os
import pickle
import re
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

from ray import cloudpickle

from serve_nb.data.channel.sockdir import pid_alive

SHM_DIR = "/dev/shm"
#: Arguments at least this large go through shared memory to a replica on this machine. Measured on the 2-core
#: development machine, a handle call carrying a float32 array, median ms, socket / shared memory: 64 KiB
#: 0.30 / 0.35, 128 KiB 0.34 / 0.33, 256 KiB 0.49 / 0.35, 1 MiB 1.60 / 0.57, 2 MiB 3.17 / 0.62.
SHARED_MEMORY_BYTES = 128 * 1024
_NAME = re.compile(r"serve_nb-(\d+)-(\d+)-(\d+)\Z")
#: Segments are at least this large (rounded up to a power of two), so sizes repeat and segments get reused.
MIN_SEGMENT_BYTES = 4 * 1024 * 1024
#: Read-only mappings a replica keeps of the segments its callers reuse (``_ReadMaps``).
MAX_READ_MAP_BYTES = 256 * 1024 * 1024
#: Shared memory one caller process keeps, in use and pooled together; past it, calls use Ray's object store.
MAX_ARENA_BYTES = int(os.environ.get("SERVE_NB_SHM_MAX_BYTES", "") or 2 * 1024**3)


def available() -> bool:
    """Whether this machine has the shared-memory directory (Linux)."""
    return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK)


@dataclass(frozen=True)
class ShmCall:
    """What travels on the channel for a call whose buffers are in shared memory: the pickle without them,
    the segment's name, and each buffer's (offset, length) in it. ``read_whole``: the buffers lie end to end
    from offset 0 and the replica wants them as one ``bytes`` anyway (an HTTP body it hands over joined), so
    it reads them in one ``pread`` and releases the segment at once: no mapping to fault in and tear down."""

    inband: bytes
    segment: str
    spans: tuple[tuple[int, int], ...]
    read_whole: bool = False


class _Segment:
    def __init__(self, name: str, size: int) -> None:
        self.name, self.size = name, size
        fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
            self.map = mmap.mmap(fd, size)
        finally:
            os.close(fd)

    def unlink(self) -> None:
        try:
            os.unlink(os.path.join(SHM_DIR, self.name))
        except FileNotFoundError:
            pass
        self.map.close()


class ShmArena:
    """A caller process's segments: handed to one call at a time, pooled when the replica releases them."""

    def __init__(self, max_bytes: int = MAX_ARENA_BYTES) -> None:
        self._max_bytes = max_bytes
        self._lock = threading.Lock()  # callers on several event loops (threads) share one arena
        self._free: dict[int, list[_Segment]] = {}
        self._busy: dict[str, _Segment] = {}
        self._bytes = 0
        self._count = 0
        remove_orphans()

    def encode(self, obj: Any) -> ShmCall | None:
        """``obj`` pickled with its large buffers copied into a segment; None if the arena is full (the caller
        then uses another way) or ``obj`` has no large buffer."""
        buffers: list[pickle.PickleBuffer] = []
        inband = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        return self.place(inband, [b.raw() for b in buffers])  # flat bytes of each buffer, C- or Fortran-ordered

    def place(self, inband: bytes, views: list[memoryview], read_whole: bool = False) -> ShmCall | None:
        """A pickle whose out-of-band buffers are ``views``, with those copied into a segment end to end; None
        if there are none or the arena is full. ``read_whole``: see ``ShmCall``."""
        total = sum(v.nbytes for v in views)
        if not views:
            return None
        segment = self._take(total)
        if segment is None:
            return None
        spans, offset = [], 0
        for view in views:
            segment.map[offset : offset + view.nbytes] = view
            spans.append((offset, view.nbytes))
            offset += view.nbytes
        return ShmCall(inband, segment.name, tuple(spans), read_whole)

    def _take(self, nbytes: int) -> _Segment | None:
        size = max(MIN_SEGMENT_BYTES, 1 << max(0, nbytes - 1).bit_length())
        with self._lock:
            pooled = self._free.get(size)
            if pooled:
                segment = pooled.pop()
            else:
                if self._bytes + size > self._max_bytes:
                    return None
                self._count += 1
                segment = _Segment(f"serve_nb-{os.getuid()}-{os.getpid()}-{self._count}", size)
                self._bytes += size
            self._busy[segment.name] = segment
            return segment

    def release(self, name: str) -> None:
        """The replica no longer reads ``name``: pool it for the next call."""
        with self._lock:
            segment = self._busy.pop(name, None)
            if segment is not None:
                self._free.setdefault(segment.size, []).append(segment)

    def abandon(self, name: str) -> None:
        """The call's connection broke before a RELEASE: the replica may still read it, so never reuse it."""
        with self._lock:
            segment = self._busy.pop(name, None)
            if segment is not None:
                self._bytes -= segment.size
        if segment is not None:
            segment.unlink()

    def close(self) -> None:
        with self._lock:
            segments = [s for pool in self._free.values() for s in pool] + list(self._busy.values())
            self._free.clear()
            self._busy.clear()
            self._bytes = 0
        for segment in segments:
            segment.unlink()


def remove_orphans() -> None:
    """Unlink the segments of this user's processes that are gone (a caller that crashed leaves its files)."""
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return
    for name in names:
        found = _NAME.match(name)
        if found is None or int(found.group(1)) != os.getuid() or pid_alive(int(found.group(2))):
            continue
        try:
            os.unlink(os.path.join(SHM_DIR, name))
        except OSError:
            pass


_arena: ShmArena | None = None
_arena_lock = threading.Lock()


def close_process_arena() -> None:
    """Remove this process's segments now (a replica that stops is killed, and runs no atexit)."""
    global _arena
    with _arena_lock:
        arena, _arena = _arena, None
    if arena is not None:
        arena.close()


def process_arena() -> ShmArena | None:
    """This process's arena (made on first use, its segments removed at exit); None without shared memory."""
    global _arena
    with _arena_lock:
        if _arena is None and available():
            import atexit

            _arena = ShmArena()
            atexit.register(_arena.close)
        return _arena


class _ReadMaps:
    """The replica's read-only mappings of the segments that carried read-whole calls, kept between calls.

    A caller reuses its pooled segments, so the same few come back call after call. Copying a body out of a
    mapping that is already in place is one ``memcpy``; a ``pread`` from tmpfs walks the file page by page
    in the kernel, and a fresh mapping faults every page in. A mapping is reused only while the name still
    names the same file (device, inode and size), and the oldest are dropped past ``max_bytes``, so a
    segment its caller unlinked does not stay pinned in memory for long."""

    def __init__(self, max_bytes: int = MAX_READ_MAP_BYTES) -> None:
        self._max_bytes = max_bytes
        self._maps: OrderedDict[str, tuple[tuple[int, int, int], mmap.mmap]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # channel connections decode on their own threads

    def mapping(self, name: str, path: str, end: int) -> mmap.mmap:
        """A read-only mapping of the file at ``path`` (segment ``name``), at least ``end`` bytes long."""
        try:
            stat = os.stat(path, follow_symlinks=False)
        except OSError as exc:
            raise BadShmCall(f"shared memory {name!r} cannot be opened: {exc.strerror}") from None
        identity = (stat.st_dev, stat.st_ino, stat.st_size)
        with self._lock:
            cached = self._maps.get(name)
            if cached is not None and cached[0] == identity:
                self._maps.move_to_end(name)
                mapped = cached[1]
                if end > len(mapped):
                    raise BadShmCall(f"the call's buffers lie outside shared memory {name!r}")
                return mapped
        mapped = _map_read_only(name, path, end)
        with self._lock:
            old = self._maps.pop(name, None)
            if old is not None:
                self._bytes -= len(old[1])
            self._maps[name] = (identity, mapped)
            self._bytes += len(mapped)
            while self._bytes > self._max_bytes and len(self._maps) > 1:
                _, (_, dropped) = self._maps.popitem(last=False)
                self._bytes -= len(dropped)  # closed when the last reader's copy is done (mmap refcounts)
        return mapped

    def clear(self) -> None:
        with self._lock:
            self._maps.clear()
            self._bytes = 0


def _open_segment(name: str, path: str) -> int:
    """The file at ``path`` (segment ``name``) opened read-only, never through a symlink."""
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise BadShmCall(f"shared memory {name!r} cannot be opened: {exc.strerror}") from None


def _map_read_only(name: str, path: str, end: int) -> mmap.mmap:
    """The whole file at ``path``, mapped read-only, after checking it holds ``end`` bytes."""
    fd = _open_segment(name, path)
    try:
        size = os.fstat(fd).st_size
        if end > size:
            raise BadShmCall(f"the call's buffers lie outside shared memory {name!r}")
        return mmap.mmap(fd, size or 1, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    finally:
        os.close(fd)


_read_maps = _ReadMaps()


def _read_whole(call: ShmCall, path: str, on_release: Callable[[str], None]) -> Any:
    """``decode`` for a ``read_whole`` call: its buffers, end to end from 0, copied into one ``bytes`` (views of
    it go to the unpickler, so a reader wanting them joined takes that ``bytes`` as it is); released at once."""
    expected = 0
    for offset, length in call.spans:
        if offset < 0 or length < 0 or offset != expected:
            raise BadShmCall(f"a read-whole call's buffers must lie end to end in {call.segment!r}")
        expected += length
    data = _read_maps.mapping(call.segment, path, expected)[:expected]
    on_release(call.segment)
    view = memoryview(data)
    return pickle.loads(call.inband, buffers=[view[offset : offset + length] for offset, length in call.spans])


class BadShmCall(ValueError):
    """A call named a segment the replica will not map (wrong name, gone, or spans outside it)."""


def decode(call: ShmCall, on_release: Callable[[str], None]) -> Any:
    """The object ``call`` carries, its buffers read from the mapped segment (no copy). ``on_release`` is called
    with the segment's name (from whichever thread drops the last reference) once nothing uses the mapping."""
    found = _NAME.match(call.segment)
    if found is None or int(found.group(1)) != os.getuid():
        raise BadShmCall(f"refusing to map shared memory named {call.segment!r}")
    path = os.path.join(SHM_DIR, call.segment)
    if call.read_whole:
        return _read_whole(call, path, on_release)
    fd = _open_segment(call.segment, path)
    try:
        size = os.fstat(fd).st_size
        end = max((offset + length for offset, length in call.spans), default=0)
        if any(offset < 0 or length < 0 for offset, length in call.spans) or end > size:
            raise BadShmCall(f"the call's buffers lie outside shared memory {call.segment!r}")
        # Mapped lazily: code that reads part of an array touches only those pages (the kernel maps its
        # neighbours with each fault), and mapping costs the same for 1 MB and 1 GB.
        mapped = mmap.mmap(fd, end or 1, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    weakref.finalize(mapped, on_release, call.segment)
    view = memoryview(mapped)
    return pickle.loads(call.inband, buffers=[view[offset : offset + length] for offset, length in call.spans])
