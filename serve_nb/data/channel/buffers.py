"""Large read-only buffers travel beside a request's pickle, as frames of their own, instead of inside it.

Pickling copies every byte of an object into the pickle, and a big pickle grows by reallocation: for a
1 MiB HTTP body that was most of the proxy's work. With pickle protocol 5 an object can offer its
bytes as ``PickleBuffer``s instead (``Pieces`` does); ``dump`` keeps the large read-only ones out of the
pickle, and the caller sends each as a BUFFER frame right after the CALL_BUFFERS frame holding the
pickle, written from where it is. The replica puts the request together (``Assembly``) and hands the
unpickler the frames' payloads. Read-only only: a small frame arrives as ``bytes``, and a writable
buffer (a numpy array, say) must come back writable, so those stay in the pickle.

A CALL_BUFFERS payload is ``!IQ`` (how many buffers follow, their total size) and then the pickle.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any, SupportsIndex

from serve_nb.common.serialization import dumps, loads
from serve_nb.data.channel.frames import IN_PLACE_BYTES, Kind, too_large

#: A buffer smaller than this stays in the pickle: a frame of its own costs more than copying it.
OUT_OF_BAND_BYTES = 16 * 1024
#: ``Pieces`` offers its bytes in slices of at most this, so each one's frame is parsed where it was
#: read and becomes one ``bytes`` in the replica, with no large buffer allocated on the way.
PIECE_BYTES = IN_PLACE_BYTES

ANNOUNCE = struct.Struct("!IQ")

Frame = tuple[int, int, tuple[bytes | memoryview, ...]]  # kind, request id, payload parts


def dump(obj: Any) -> tuple[bytes, list[memoryview]]:
    """``obj`` pickled, and the read-only buffers of at least ``OUT_OF_BAND_BYTES`` it left out, in order."""
    out_of_band: list[memoryview] = []

    def take(buffer: pickle.PickleBuffer) -> bool:
        view = buffer.raw()
        if view.nbytes < OUT_OF_BAND_BYTES or not view.readonly:
            return True  # in band
        out_of_band.append(view)
        return False

    return dumps(obj, take), out_of_band


def wire_size(pickled: bytes, out_of_band: list[memoryview]) -> int:
    """The bytes a request occupies on the wire, as the replica counts them against its frame limit."""
    if not out_of_band:
        return len(pickled)
    return ANNOUNCE.size + len(pickled) + sum(view.nbytes for view in out_of_band)


def frames(rid: int, pickled: bytes, out_of_band: list[memoryview]) -> list[Frame]:
    """A request with buffers left out of its pickle: CALL_BUFFERS, then one BUFFER frame per buffer."""
    head = ANNOUNCE.pack(len(out_of_band), sum(view.nbytes for view in out_of_band))
    return [(Kind.CALL_BUFFERS, rid, (head, pickled)), *((Kind.BUFFER, rid, (view,)) for view in out_of_band)]


class Assembly:
    """A CALL_BUFFERS request being put together in the replica: the pickle, then its buffers as their
    frames arrive. The announced size is checked against ``limit`` at once, as a CALL frame's is."""

    __slots__ = ("_pickled", "_count", "_missing", "_buffers")

    def __init__(self, payload: bytes | bytearray, limit: int) -> None:
        if len(payload) < ANNOUNCE.size:
            raise ValueError("a CALL_BUFFERS frame too short to announce its buffers")
        count, total = ANNOUNCE.unpack_from(payload)
        if len(payload) + total > limit:
            raise too_large("request", len(payload) + total, limit)
        self._pickled = memoryview(payload)[ANNOUNCE.size :]
        self._count = count
        self._missing = total
        self._buffers: list[bytes | bytearray] = []

    @property
    def complete(self) -> bool:
        return len(self._buffers) == self._count

    def add(self, buffer: bytes | bytearray) -> None:
        """The next buffer. A peer sending more than it announced, or an empty buffer (which ``dump``
        never sends: it would let a count announced as huge be run up for nothing), is an error."""
        self._missing -= len(buffer)
        if self._missing < 0 or not buffer:
            raise ValueError("a request's buffers are not what it announced")
        self._buffers.append(buffer)

    def value(self) -> Any:
        """The object, once ``complete``."""
        return loads(self._pickled, buffers=self._buffers)


def unpickled_pieces(*chunks: bytes | bytearray | memoryview) -> "Pieces":
    """What ``Pieces`` unpickles to. Chunks that arrived as ``bytes`` (read from a socket) stay apart; views
    become one ``bytes``, which an application reading the whole body takes as it is (``replica_adapter``
    hands it to starlette's ``Request`` without another join): the ``bytes`` they view when they cover it
    end to end (shared memory read whole), else a join (one copy)."""
    size = sum(len(c) for c in chunks)
    if all(type(c) is bytes for c in chunks):
        return Pieces(list(chunks), size)
    whole = chunks[0].obj if isinstance(chunks[0], memoryview) else None
    if type(whole) is bytes and len(whole) == size and all(type(c) is memoryview and c.obj is whole for c in chunks):
        return Pieces([whole], size)  # views of one bytes, end to end (a read-whole shared-memory call): no copy
    return Pieces([b"".join(chunks)], size)


class Pieces:
    """Bytes kept as the pieces they arrived in (an HTTP body read from the client), never joined here.

    Pickled, each piece (in slices of at most ``PIECE_BYTES``) is a read-only ``PickleBuffer``, which
    ``dump`` leaves out of the pickle; unpickled, it is a ``Pieces`` of those slices, which the
    replica hands to the application one ASGI message each, as a server hands it a body."""

    __slots__ = ("pieces", "size")

    def __init__(self, pieces: list[bytes], size: int) -> None:
        self.pieces = pieces
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return b"".join(self.pieces)

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, tuple[Any, ...]]:
        if int(protocol) < 5:  # no PickleBuffer before protocol 5: the pieces go in the pickle
            return unpickled_pieces, tuple(self.pieces)
        return unpickled_pieces, tuple(pickle.PickleBuffer(s) for s in self._slices())

    def _slices(self) -> list[memoryview]:
        out = []
        for piece in self.pieces:
            view = memoryview(piece)
            out.extend(view[start : start + PIECE_BYTES] for start in range(0, len(view), PIECE_BYTES))
        return out
